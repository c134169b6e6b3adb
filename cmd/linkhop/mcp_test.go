package main_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMCP drives `linkhop mcp` with the SDK's own client over stdio, as an agent's MCP client
// would start it.
func TestMCP(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.Command(bin, "mcp")
	cmd.Env = append(cleanEnv(), s.env(s.key(t, ptr(0)))...)
	c := mcp.NewClient(&mcp.Implementation{Name: "linkhop-test", Version: "v0"}, nil)
	session, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()

	t.Run("tools", func(t *testing.T) {
		res, err := session.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
			if len(tool.Description) < 80 {
				t.Errorf("%s: a thin description %q", tool.Name, tool.Description)
			}
			schema, _ := json.Marshal(tool.InputSchema)
			want := map[string]string{"resolve_link": `"required":["url"]`, "get_job": `"required":["job_id"]`, "list_providers": `"type":"object"`}[tool.Name]
			if !strings.Contains(string(schema), want) {
				t.Errorf("%s: input schema %s lacks %s", tool.Name, schema, want)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"get_job", "list_providers", "resolve_link"}) {
			t.Errorf("tools %v", names)
		}
	})

	var jobID string
	t.Run("resolve a link", func(t *testing.T) {
		res := call(ctx, t, session, "resolve_link", map[string]any{"url": "http://sho.rt/agent"})
		if res.IsError {
			t.Fatalf("tool error: %v", text(res))
		}
		var out struct {
			TargetURL string `json:"target_url"`
			Provider  string `json:"provider"`
			Tier      string `json:"tier"`
			JobID     string `json:"job_id"`
			Hops      []struct {
				URL  string `json:"url"`
				Kind string `json:"kind"`
			} `json:"hops"`
		}
		structured(t, res, &out)
		if out.TargetURL != "https://example.com/dest/agent" || out.Provider != "short" || out.Tier != "standard" ||
			len(out.Hops) != 2 || out.Hops[0].Kind != "start" || out.JobID == "" {
			t.Errorf("result %+v", out)
		}
		if !strings.Contains(text(res), "https://example.com/dest/agent") {
			t.Errorf("text content %q", text(res))
		}
		jobID = out.JobID
	})
	t.Run("an unsupported link is a tool error with the code and detail", func(t *testing.T) {
		res := call(ctx, t, session, "resolve_link", map[string]any{"url": "https://example.org/not-a-shortener"})
		var out struct {
			Error  string `json:"error"`
			Detail string `json:"detail"`
			Status int    `json:"status"`
		}
		structured(t, res, &out)
		if !res.IsError || out.Error != "unsupported_link" || out.Detail == "" || out.Status != 422 ||
			!strings.HasPrefix(text(res), "unsupported_link: ") {
			t.Errorf("result %+v, text %q", out, text(res))
		}
	})
	t.Run("a failing link is a tool error with the job's code", func(t *testing.T) {
		res := call(ctx, t, session, "resolve_link", map[string]any{"url": "http://sho.rt/gone"})
		if !res.IsError || !strings.HasPrefix(text(res), "link_removed") {
			t.Errorf("result %q", text(res))
		}
	})
	t.Run("get_job", func(t *testing.T) {
		res := call(ctx, t, session, "get_job", map[string]any{"job_id": jobID})
		var job map[string]any
		structured(t, res, &job)
		if res.IsError || job["job_id"] != jobID || job["status"] != "done" {
			t.Errorf("job %v", job)
		}
		res = call(ctx, t, session, "get_job", map[string]any{"job_id": "nope"})
		if !res.IsError || !strings.HasPrefix(text(res), "not_found") {
			t.Errorf("unknown job: %q", text(res))
		}
	})
	t.Run("bad arguments are tool errors, and the server goes on", func(t *testing.T) {
		res := call(ctx, t, session, "resolve_link", map[string]any{})
		if !res.IsError {
			t.Errorf("no error for a missing url: %q", text(res))
		}
		res = call(ctx, t, session, "list_providers", nil)
		if res.IsError || !strings.Contains(text(res), `"sho.rt"`) {
			t.Errorf("list_providers: %q", text(res))
		}
	})
}

func call(ctx context.Context, t *testing.T, s *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func structured(t *testing.T, res *mcp.CallToolResult, v any) {
	t.Helper()
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
}

// TestMCPRawJSONRPC speaks newline-delimited JSON-RPC to `linkhop mcp` by hand, and closes its
// input right after the requests: every request is still answered before the server stops.
func TestMCPRawJSONRPC(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":"three","method":"tools/call","params":{"name":"resolve_link","arguments":{"url":"http://sho.rt/raw"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"resolve_link","arguments":{"url":"ftp://sho.rt/raw"}}}`,
	}, "\n") + "\n"
	got := linkhop(t, s.env(s.key(t, ptr(0))), in, "mcp")
	if got.code != 0 {
		t.Errorf("exit %d, stderr %q", got.code, got.stderr)
	}
	answers := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(got.stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON on stdout: %q", line)
		}
		id, _ := json.Marshal(m["id"])
		answers[string(id)] = m
	}
	if len(answers) != 4 {
		t.Fatalf("%d answers for 4 requests:\n%s", len(answers), got.stdout)
	}
	res, _ := json.Marshal(answers[`"three"`]["result"])
	if !strings.Contains(string(res), `"target_url":"https://example.com/dest/raw"`) || strings.Contains(string(res), `"isError":true`) {
		t.Errorf("resolve_link: %s", res)
	}
	res, _ = json.Marshal(answers["4"]["result"])
	if !strings.Contains(string(res), `"isError":true`) || !strings.Contains(string(res), "unsupported_link: Only http") {
		t.Errorf("resolve_link of an ftp link: %s", res)
	}
}
