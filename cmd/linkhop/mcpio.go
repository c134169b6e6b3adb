package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// answerAll keeps the end of standard input from cutting off calls in flight.
//
// On end of input the MCP SDK closes the session at once: calls still running are cancelled
// and their answers never written. A client that writes its requests and then closes its end
// (`printf … | linkhop mcp`, a test harness) would get nothing for them. So the reader seen by
// the SDK holds the end of input back until every request read so far has been answered (or
// cancelled by the client), at most for limit, or until ctx ends.
type answerAll struct {
	ctx   context.Context
	in    io.Reader
	out   io.Writer
	limit time.Duration

	mu      sync.Mutex
	open    map[string]bool // ids of requests read and not yet answered
	changed chan struct{}   // closed and replaced whenever open shrinks
	inLine  []byte          // a partial line read
	outLine []byte          // a partial line written
}

func newAnswerAll(ctx context.Context, in io.Reader, out io.Writer, limit time.Duration) *answerAll {
	return &answerAll{ctx: ctx, in: in, out: out, limit: limit, open: map[string]bool{}, changed: make(chan struct{})}
}

// message is what answerAll reads of a JSON-RPC message.
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		RequestID json.RawMessage `json:"requestId"`
	} `json:"params"`
}

// idKey is an id in one spelling, whatever its JSON spelling on the wire.
func idKey(raw json.RawMessage) string {
	var v any
	if len(raw) == 0 || json.Unmarshal(raw, &v) != nil || v == nil {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// lines feeds p to the partial line in buf and calls f with each complete line.
func lines(buf *[]byte, p []byte, f func([]byte)) {
	*buf = append(*buf, p...)
	for {
		i := bytes.IndexByte(*buf, '\n')
		if i < 0 {
			return
		}
		f((*buf)[:i])
		*buf = (*buf)[i+1:]
	}
}

func (a *answerAll) Read(p []byte) (int, error) {
	n, err := a.in.Read(p)
	a.mu.Lock()
	lines(&a.inLine, p[:n], func(line []byte) {
		var m message
		if json.Unmarshal(line, &m) != nil {
			return
		}
		switch {
		case m.Method == "notifications/cancelled":
			a.answered(idKey(m.Params.RequestID))
		case m.Method != "":
			if k := idKey(m.ID); k != "" {
				a.open[k] = true
			}
		}
	})
	a.mu.Unlock()
	if err == io.EOF {
		a.drain()
	}
	return n, err
}

func (a *answerAll) Write(p []byte) (int, error) {
	n, err := a.out.Write(p)
	a.mu.Lock()
	lines(&a.outLine, p[:n], func(line []byte) {
		var m message
		if json.Unmarshal(line, &m) == nil && m.Method == "" {
			a.answered(idKey(m.ID))
		}
	})
	a.mu.Unlock()
	return n, err
}

// answered forgets an open request; a.mu is held.
func (a *answerAll) answered(k string) {
	if !a.open[k] {
		return
	}
	delete(a.open, k)
	close(a.changed)
	a.changed = make(chan struct{})
}

// drain waits until no request is open, limit has passed, or ctx ends.
func (a *answerAll) drain() {
	deadline := time.NewTimer(a.limit)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		left, changed := len(a.open), a.changed
		a.mu.Unlock()
		if left == 0 {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			return
		case <-a.ctx.Done():
			return
		}
	}
}

// Close closes nothing: standard input and output belong to the process.
func (a *answerAll) Close() error { return nil }
