// Command linkhop is the command line for people and scripts using a running linkhop service
// (docs/cli.md): resolve links from arguments, a file or standard input; read a job, the
// account or the providers; verify a webhook delivery's signature; and serve the API's tools
// to AI agents over the Model Context Protocol (docs/mcp.md).
//
//	linkhop resolve [-f FILE] [--json] [URL…]
//	linkhop job ID | account | providers
//	linkhop verify-webhook --secret whsec_… (--header VALUE | --standard ID,TIMESTAMP,SIGNATURE) < body
//	linkhop mcp
//
// The service is LINKHOP_URL with the API key LINKHOP_API_KEY, or --url and --key.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/linkhop/linkhop/client"
	"github.com/linkhop/linkhop/internal/buildinfo"
)

// version is the build's version (docs/operations.md#versions); the MCP server reports it.
var version = buildinfo.Version

// Exit codes (docs/cli.md).
const (
	exitOK     = 0
	exitFailed = 1 // a link did not resolve, a signature is invalid, the API refused a read
	exitUsage  = 2 // usage, configuration or authentication errors
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &cli{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		stderrTTY: term.IsTerminal(int(os.Stderr.Fd())),
	}
	code := c.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// cli is one invocation: its streams and environment, so tests can run it in process too.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	stderrTTY      bool // draw the progress bar
}

const usage = `linkhop — the command line of a running linkhop service

Usage:
  linkhop resolve [-f FILE] [--json] [URL…]   resolve links; prints URL<TAB>TARGET per line
  linkhop job ID                              print a job
  linkhop account                             print the key's account
  linkhop providers                           print the providers
  linkhop verify-webhook --secret whsec_… (--header VALUE | --standard ID,TIMESTAMP,SIGNATURE) < body
                                              check a webhook delivery's signature
  linkhop mcp                                 serve resolve_link, get_job and list_providers
                                              to an MCP client on standard input and output

Every command but verify-webhook needs the service's address and an API key:
  LINKHOP_URL      or --url   e.g. http://127.0.0.1:8080
  LINKHOP_API_KEY  or --key   sk_live_…

'linkhop COMMAND --help' tells more. Exit status: 0 success, 1 a link did not resolve (or
the signature is invalid, or the API refused the request), 2 usage, configuration or
authentication errors. See docs/cli.md.
`

func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stdout, usage)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintln(c.stdout, buildinfo.String())
		return exitOK
	case "resolve":
		return c.resolve(ctx, rest)
	case "job":
		return c.show(ctx, "job", rest)
	case "account":
		return c.show(ctx, "account", rest)
	case "providers":
		return c.show(ctx, "providers", rest)
	case "verify-webhook":
		return c.verifyWebhook(rest)
	case "mcp":
		return c.mcp(ctx, rest)
	}
	fmt.Fprintf(c.stderr, "linkhop: unknown command %q; 'linkhop --help' lists the commands\n", cmd)
	return exitUsage
}

// command is a subcommand's flag set with its help text.
type command struct {
	fs   *flag.FlagSet
	help string
	url  *string
	key  *string
}

func newCommand(name, help string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and help are printed by parse, to the right stream
	return &command{fs: fs, help: help}
}

// withService adds --url and --key.
func (cmd *command) withService() *command {
	cmd.url = cmd.fs.String("url", "", "the service's base URL (default $LINKHOP_URL)")
	cmd.key = cmd.fs.String("key", "", "the API key, sk_live_… (default $LINKHOP_API_KEY)")
	return cmd
}

// parse parses args, flags and operands in any order (up to a "--"), and returns the
// operands. done is true when the command must stop with code: --help (0, help on standard
// output) or a usage error (2, one line on standard error).
func (c *cli) parse(cmd *command, args []string) (operands []string, code int, done bool) {
	for {
		err := cmd.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printHelp(cmd, c.stdout)
			return nil, exitOK, true
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "linkhop %s: %v ('linkhop %s --help' shows the usage)\n", cmd.fs.Name(), err, cmd.fs.Name())
			return nil, exitUsage, true
		}
		rest := cmd.fs.Args()
		if len(rest) == 0 {
			return operands, 0, false
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(operands, rest...), 0, false
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
}

func (c *cli) printHelp(cmd *command, w io.Writer) {
	fmt.Fprint(w, cmd.help)
	var b strings.Builder
	cmd.fs.SetOutput(&b)
	cmd.fs.PrintDefaults()
	cmd.fs.SetOutput(io.Discard)
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", b.String())
	}
}

// client builds the API client from --url/--key or the environment; false after printing
// the configuration error.
func (c *cli) client(cmd *command) (*client.Client, bool) {
	base, key := *cmd.url, *cmd.key
	if base == "" {
		base = c.getenv("LINKHOP_URL")
	}
	if key == "" {
		key = c.getenv("LINKHOP_API_KEY")
	}
	switch {
	case base == "":
		fmt.Fprintf(c.stderr, "linkhop %s: no service address: set LINKHOP_URL or pass --url (e.g. http://127.0.0.1:8080)\n", cmd.fs.Name())
		return nil, false
	case !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://"):
		fmt.Fprintf(c.stderr, "linkhop %s: the service address %q must start with http:// or https://\n", cmd.fs.Name(), base)
		return nil, false
	case key == "":
		fmt.Fprintf(c.stderr, "linkhop %s: no API key: set LINKHOP_API_KEY or pass --key\n", cmd.fs.Name())
		return nil, false
	}
	return client.New(base, key, client.WithUserAgent("linkhop-cli/"+version)), true
}

// failure prints err as one line and returns its exit code: 2 when the key is wrong or the
// service cannot be reached (configuration), else 1.
func (c *cli) failure(name string, err error) int {
	fmt.Fprintf(c.stderr, "linkhop %s: %s\n", name, strings.TrimPrefix(err.Error(), "linkhop: "))
	var e *client.Error
	if errors.As(err, &e) {
		if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
			return exitUsage
		}
		return exitFailed
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return exitFailed
	}
	return exitUsage
}

const jobHelp = `Usage: linkhop job [--url URL] [--key KEY] ID

Prints the job ID (GET /v1/jobs/ID) as JSON. A job of another key, an unknown or an expired
one is "404 not_found" on standard error and exit status 1.
`

const accountHelp = `Usage: linkhop account [--url URL] [--key KEY]

Prints the key's account (GET /v1/account) as JSON: limits, daily usage, balance.
`

const providersHelp = `Usage: linkhop providers [--url URL] [--key KEY]

Prints the providers whose links the service resolves (GET /v1/providers) as JSON.
`

// show is job, account and providers: one GET, its answer printed as indented JSON.
func (c *cli) show(ctx context.Context, name string, args []string) int {
	help := map[string]string{"job": jobHelp, "account": accountHelp, "providers": providersHelp}[name]
	cmd := newCommand(name, help).withService()
	operands, code, done := c.parse(cmd, args)
	if done {
		return code
	}
	var path string
	switch {
	case name == "job" && len(operands) == 1 && operands[0] != "":
		path = "/v1/jobs/" + url.PathEscape(operands[0])
	case name == "job":
		fmt.Fprintf(c.stderr, "linkhop job: give one job id ('linkhop job --help' shows the usage)\n")
		return exitUsage
	case len(operands) > 0:
		fmt.Fprintf(c.stderr, "linkhop %s: takes no arguments ('linkhop %s --help' shows the usage)\n", name, name)
		return exitUsage
	default:
		path = "/v1/" + name
	}
	cl, ok := c.client(cmd)
	if !ok {
		return exitUsage
	}
	var raw json.RawMessage
	if err := cl.Do(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return c.failure(name, err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return c.failure(name, err)
	}
	out.WriteByte('\n')
	_, _ = c.stdout.Write(out.Bytes())
	return exitOK
}
