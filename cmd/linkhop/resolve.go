package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/linkhop/linkhop/client"
)

const resolveHelp = `Usage: linkhop resolve [--url URL] [--key KEY] [--json] [--no-progress] [-f FILE] [URL…]

Resolves each link and prints one line per link, in input order, as soon as it and every
link before it are known:

  URL<TAB>TARGET          the link resolved
  URL<TAB>error:CODE      it did not: the API refused it (unsupported_link, quota_exceeded,
                          …) or its job failed (link_removed, resolve_failed, provider_down)

The links are the arguments, or the lines of FILE (-f; "-" is standard input), or, with
neither, the lines of standard input; blank lines and lines starting with # are skipped.
They are sent in batches (POST /v1/resolve/batch) and their jobs polled together
(GET /v1/jobs?ids=); a service without those endpoints gets single calls instead.

A progress bar (done, failed, total, rate, elapsed time) is drawn on standard error while
it is a terminal, never otherwise.

Exit status: 0 every link resolved, 1 some did not, 2 usage, configuration or
authentication errors (one line on standard error).
`

func (c *cli) resolve(ctx context.Context, args []string) int {
	cmd := newCommand("resolve", resolveHelp).withService()
	file := cmd.fs.String("f", "", "read the links from `FILE`, one per line (\"-\": standard input)")
	asJSON := cmd.fs.Bool("json", false, "print one JSON object per link instead of URL<TAB>TARGET")
	noProgress := cmd.fs.Bool("no-progress", false, "never draw the progress bar")
	operands, code, done := c.parse(cmd, args)
	if done {
		return code
	}
	urls, err := c.links(operands, *file)
	if err != nil {
		fmt.Fprintf(c.stderr, "linkhop resolve: %v\n", err)
		return exitUsage
	}
	if len(urls) == 0 {
		fmt.Fprintln(c.stderr, "linkhop resolve: no links given ('linkhop resolve --help' shows the usage)")
		return exitUsage
	}
	cl, ok := c.client(cmd)
	if !ok {
		return exitUsage
	}

	var bar *progress
	if c.stderrTTY && !*noProgress {
		bar = newProgress(c.stderr, len(urls))
	}
	p := &printer{w: c.stdout, json: *asJSON, known: make([]*client.Outcome, len(urls))}
	failed := 0
	_, err = cl.ResolveMany(ctx, urls, func(i int, o client.Outcome) {
		if o.Err != nil {
			failed++
		}
		if bar == nil {
			p.add(i, o)
			return
		}
		// Standard output is often the same terminal: take the bar off its line first, so a
		// printed line does not run into it; the bar is drawn again below.
		bar.around(o.Err != nil, func() { p.add(i, o) })
	})
	if bar != nil {
		bar.stop()
	}
	if err != nil {
		return c.failure("resolve", err)
	}
	if failed > 0 {
		return exitFailed
	}
	return exitOK
}

// links reads the links of the operands, or of -f, or of standard input.
func (c *cli) links(operands []string, file string) ([]string, error) {
	if len(operands) > 0 && file != "" {
		return nil, errors.New("give links as arguments or with -f, not both")
	}
	if len(operands) > 0 {
		return operands, nil
	}
	in := c.stdin
	if file != "" && file != "-" {
		f, err := os.Open(file) //nolint:gosec // G304: the user names the file to read on their own command line

		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	var urls []string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		urls = append(urls, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the links: %w", err)
	}
	return urls, nil
}

// printer writes outcomes in input order: outcome i once 0…i are all known.
type printer struct {
	w     io.Writer
	json  bool
	known []*client.Outcome
	next  int
}

func (p *printer) add(i int, o client.Outcome) {
	p.known[i] = &o
	for p.next < len(p.known) && p.known[p.next] != nil {
		p.print(p.known[p.next])
		p.known[p.next] = nil
		p.next++
	}
}

// result is a link's line in --json mode (docs/cli.md).
type result struct {
	URL         string       `json:"url"`
	Status      string       `json:"status"` // done, failed, invalid, or rejected by the API
	TargetURL   *string      `json:"target_url"`
	Provider    *string      `json:"provider"`
	Tier        *string      `json:"tier"`
	JobID       *string      `json:"job_id"`
	Cached      bool         `json:"cached"`
	Error       *string      `json:"error"`
	ErrorDetail *string      `json:"error_detail"`
	Hops        []client.Hop `json:"hops"`
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// code is the error code of a link's outcome, "" when it resolved.
func code(err error) (code, detail string) {
	var e *client.Error
	var je *client.JobError
	switch {
	case err == nil:
		return "", ""
	case errors.As(err, &je):
		return je.Code, je.Detail
	case errors.As(err, &e) && e.Code != "":
		return e.Code, e.Detail
	case errors.As(err, &e):
		return fmt.Sprintf("http_%d", e.Status), e.Title
	}
	return "request_failed", err.Error()
}

func resultOf(o *client.Outcome) result {
	r := result{URL: o.URL, Hops: []client.Hop{}}
	if j := o.Job; j != nil {
		r.Status, r.TargetURL, r.Provider, r.Tier = string(j.Status), orNull(j.TargetURL), orNull(j.Provider), orNull(j.Tier)
		r.JobID, r.Cached = orNull(j.JobID), j.Cached
		if j.Hops != nil {
			r.Hops = j.Hops
		}
	} else {
		r.Status = "rejected"
	}
	c, d := code(o.Err)
	r.Error, r.ErrorDetail = orNull(c), orNull(d)
	return r
}

func (p *printer) print(o *client.Outcome) {
	if p.json {
		b, _ := json.Marshal(resultOf(o))
		_, _ = fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	if c, _ := code(o.Err); c != "" {
		_, _ = fmt.Fprintf(p.w, "%s\terror:%s\n", o.URL, c)
		return
	}
	_, _ = fmt.Fprintf(p.w, "%s\t%s\n", o.URL, o.Job.TargetURL)
}

// progress is the progress bar on standard error: links done of the total, how many failed,
// the rate and the elapsed time. A ticker redraws it while nothing finishes, so the elapsed
// time moves.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	bar    *progressbar.ProgressBar
	failed int
	quit   chan struct{}
	wg     sync.WaitGroup
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, quit: make(chan struct{})}
	p.bar = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("resolving, 0 failed"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("links"),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { _, _ = fmt.Fprintln(w) }),
	)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.mu.Lock()
				_ = p.bar.Add(0)
				p.mu.Unlock()
			case <-p.quit:
				return
			}
		}
	}()
	return p
}

// around clears the bar, calls print, and counts one more link done (failed or not).
func (p *progress) around(failed bool, print func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Clear()
	print()
	if failed {
		p.failed++
		p.bar.Describe(fmt.Sprintf("resolving, %d failed", p.failed))
	}
	_ = p.bar.Add(1)
}

func (p *progress) stop() {
	close(p.quit)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bar.IsFinished() {
		// Interrupted or stopped by an error: end the bar's line so what follows starts on its own.
		_ = p.bar.Exit()
		_, _ = fmt.Fprintln(p.w)
	}
}
