package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/linkhop/linkhop/client"
)

const mcpHelp = `Usage: linkhop mcp [--url URL] [--key KEY] [--wait DURATION]

Serves a Model Context Protocol server on standard input and output (newline-delimited
JSON-RPC 2.0), for AI agents. An MCP client starts it as a subprocess; see docs/mcp.md for
its configuration. Tools:

  resolve_link    {"url"}     resolve a link and wait for the result
  get_job         {"job_id"}  read a job
  list_providers  {}          the providers whose links the service resolves

Errors of the API and failed links come back as tool errors carrying the error code and
detail; the server keeps running. Logs go to standard error.
`

// mcpResolveDescription tells an agent when to call resolve_link and what comes back.
const mcpResolveDescription = `Resolve a short or ad-gated link (bit.ly, t.co, ouo.io and the other hosts that list_providers shows) to its final destination, without visiting it yourself. Waits until the link is resolved, usually a few seconds, and returns target_url (the destination), provider, tier and hops (every URL on the way, in order, with the HTTP status received and how it was reached). When the link cannot be resolved the result is an error naming its code: unsupported_link (the host is not a provider), link_removed (the provider says the link no longer exists), resolve_failed (a loop, a captcha gate, no findable target), provider_down (the provider kept failing), quota_exceeded or rate_limited (the API key's limits; retry_after says when to try again). If the wait runs out, the error carries the job_id to read later with get_job.`

const mcpJobDescription = `Read a resolve job by its job_id: its status (queued, running, done, failed, invalid), target_url when done, provider, tier, hops, error and error_detail when it failed, and the webhook delivery state. Use it for a job_id that resolve_link returned when its wait ran out. Jobs of other API keys, unknown and expired ones are errors with code not_found.`

const mcpProvidersDescription = `List the link shorteners and ad-gate services this linkhop service resolves: for each, its id, label, the hosts whose links it accepts, its tier (a standard link costs 1 credit, a premium one 2) and its typical latency. Links of other hosts are refused with unsupported_link.`

type resolveArgs struct {
	URL string `json:"url" jsonschema:"the link to resolve: an absolute http or https URL of a provider's host, e.g. https://bit.ly/3abcDEF"`
}

type jobArgs struct {
	JobID string `json:"job_id" jsonschema:"the job's id, as resolve_link returned it"`
}

type noArgs struct{}

// resolved is resolve_link's result.
type resolved struct {
	URL       string       `json:"url"`
	TargetURL string       `json:"target_url"`
	Provider  *string      `json:"provider"`
	Tier      *string      `json:"tier"`
	JobID     *string      `json:"job_id"`
	Cached    bool         `json:"cached"`
	Hops      []client.Hop `json:"hops"`
}

// toolError is the structured content of a tool error: the problem's or the job's code and
// detail.
type toolError struct {
	Error      string  `json:"error"`
	Detail     string  `json:"detail,omitempty"`
	Status     int     `json:"status,omitempty"`
	JobID      *string `json:"job_id,omitempty"`
	RetryAfter int64   `json:"retry_after,omitempty"`
}

func (c *cli) mcp(ctx context.Context, args []string) int {
	cmd := newCommand("mcp", mcpHelp).withService()
	wait := cmd.fs.Duration("wait", 2*time.Minute, "how long resolve_link waits for a job before it answers with the job_id")
	operands, code, done := c.parse(cmd, args)
	if done {
		return code
	}
	if len(operands) > 0 {
		fmt.Fprintln(c.stderr, "linkhop mcp: takes no arguments ('linkhop mcp --help' shows the usage)")
		return exitUsage
	}
	cl, ok := c.client(cmd)
	if !ok {
		return exitUsage
	}
	srv := newMCPServer(cl, *wait)
	stdio := newAnswerAll(ctx, c.stdin, c.stdout, *wait+30*time.Second)
	if err := srv.Run(ctx, &mcp.IOTransport{Reader: stdio, Writer: stdio}); err != nil && ctx.Err() == nil {
		fmt.Fprintf(c.stderr, "linkhop mcp: %v\n", err)
		return exitFailed
	}
	return exitOK
}

func newMCPServer(cl *client.Client, wait time.Duration) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "linkhop", Title: "linkhop link resolver", Version: version}, nil)
	openWorld := true
	mcp.AddTool(srv, &mcp.Tool{
		Name: "resolve_link", Description: mcpResolveDescription,
		Annotations: &mcp.ToolAnnotations{Title: "Resolve a link", OpenWorldHint: &openWorld, IdempotentHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in resolveArgs) (*mcp.CallToolResult, any, error) {
		if strings.TrimSpace(in.URL) == "" {
			return toolFailure(toolError{Error: "invalid_request", Detail: "url is required."}), nil, nil
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		job, err := cl.ResolveAndWait(wctx, in.URL)
		if err != nil {
			te := toolErrorOf(err)
			if job != nil && job.JobID != "" {
				te.JobID = &job.JobID
			}
			if wctx.Err() != nil && ctx.Err() == nil {
				te.Error, te.Detail = "timeout", fmt.Sprintf("The job had not finished after %s; read it later with get_job.", wait)
			}
			return toolFailure(te), nil, nil
		}
		out := resolved{URL: in.URL, TargetURL: job.TargetURL, Provider: orNull(job.Provider), Tier: orNull(job.Tier),
			JobID: orNull(job.JobID), Cached: job.Cached, Hops: job.Hops}
		if out.Hops == nil {
			out.Hops = []client.Hop{}
		}
		return toolSuccess(out), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{
		Name: "get_job", Description: mcpJobDescription,
		Annotations: &mcp.ToolAnnotations{Title: "Read a resolve job", ReadOnlyHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in jobArgs) (*mcp.CallToolResult, any, error) {
		if strings.TrimSpace(in.JobID) == "" {
			return toolFailure(toolError{Error: "invalid_request", Detail: "job_id is required."}), nil, nil
		}
		return rawTool(ctx, cl, "/v1/jobs/"+url.PathEscape(in.JobID)), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{
		Name: "list_providers", Description: mcpProvidersDescription,
		Annotations: &mcp.ToolAnnotations{Title: "List the providers", ReadOnlyHint: true},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, _ noArgs) (*mcp.CallToolResult, any, error) {
		return rawTool(ctx, cl, "/v1/providers"), nil, nil
	})
	return srv
}

// rawTool answers with the API's JSON object as it came.
func rawTool(ctx context.Context, cl *client.Client, path string) *mcp.CallToolResult {
	var raw json.RawMessage
	if err := cl.Do(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return toolFailure(toolErrorOf(err))
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(raw)}}, StructuredContent: raw}
}

func toolSuccess(v any) *mcp.CallToolResult {
	b, _ := json.Marshal(v)
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}, StructuredContent: json.RawMessage(b)}
}

// toolFailure is a tool error (isError): the text says the code and detail in words, the
// structured content carries them as fields.
func toolFailure(te toolError) *mcp.CallToolResult {
	text := te.Error
	if te.Detail != "" {
		text += ": " + te.Detail
	}
	if te.JobID != nil {
		text += " (job_id " + *te.JobID + ")"
	}
	b, _ := json.Marshal(te)
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: text}}, StructuredContent: json.RawMessage(b)}
}

func toolErrorOf(err error) toolError {
	var e *client.Error
	var je *client.JobError
	switch {
	case errors.As(err, &je):
		return toolError{Error: je.Code, Detail: je.Detail, JobID: orNull(je.JobID)}
	case errors.As(err, &e):
		c, d := code(e)
		return toolError{Error: c, Detail: d, Status: e.Status, RetryAfter: int64(e.RetryAfter / time.Second)}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return toolError{Error: "cancelled", Detail: "The request was cancelled."}
	}
	return toolError{Error: "request_failed", Detail: err.Error()}
}
