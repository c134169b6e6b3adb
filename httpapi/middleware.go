package httpapi

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkhop/linkhop/problem"
)

type ctxKey int

const infoKey ctxKey = 0

// reqInfo is filled in while a request passes through the stack, for the access log and
// metrics that the outermost middleware writes after the handler returns.
type reqInfo struct {
	id     string
	route  string
	keyID  string
	status int
	bytes  int
}

func info(r *http.Request) *reqInfo {
	if i, ok := r.Context().Value(infoKey).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

// RequestID returns the request id of r ("" outside the middleware).
func RequestID(r *http.Request) string { return info(r).id }

type recorder struct {
	http.ResponseWriter
	info        *reqInfo
	wroteHeader bool
}

func (w *recorder) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.info.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.info.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush for asynqmon).
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// validRequestID accepts a client's X-Request-Id only when it is short and plain, so it can
// be logged and echoed without escaping.
func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// newRequestID is 16 random hex digits. A request id only has to tell requests apart in logs:
// math/rand/v2's generator (ChaCha8, seeded by the runtime) does that without the system call
// crypto/rand makes on every request, which is dear on some VMs.
func newRequestID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64()) //nolint:gosec // G404: an id for logs, not a secret
	return hex.EncodeToString(b[:])
}

// outer is the outermost middleware: request id, panic recovery, access log and metrics.
// It wraps the whole router so that 404s and 405s get all of it too.
func (s *Server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{id: r.Header.Get("X-Request-Id"), route: "unmatched"}
		if !validRequestID(ri.id) {
			ri.id = newRequestID()
		}
		w.Header().Set("X-Request-Id", ri.id)
		rec := &recorder{ResponseWriter: w, info: ri}
		r = r.WithContext(context.WithValue(r.Context(), infoKey, ri))
		defer func() {
			if p := recover(); p != nil {
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				s.log.Error("panic serving request", "request_id", ri.id, "panic", p, "stack", string(debug.Stack()))
				if !rec.wroteHeader {
					problem.Write(rec, ri.id, problem.New(problem.InternalError, "An unexpected error occurred."))
				}
			}
			d := time.Since(start)
			if ri.status == 0 {
				ri.status = http.StatusOK
			}
			s.metrics.observeRequest(ri.route, r.Method, ri.status, d)
			level := slog.LevelInfo
			if ri.status >= 500 {
				level = slog.LevelError
			}
			if !s.log.Enabled(r.Context(), level) {
				return // the attributes below (the client address above all) cost more than nothing
			}
			// Never the Authorization header or the query: only what identifies the request.
			s.log.LogAttrs(r.Context(), level, "request",
				slog.String("request_id", ri.id), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.String("route", ri.route),
				slog.Int("status", ri.status), slog.Int("bytes", ri.bytes),
				slog.Duration("duration", d), slog.String("key_id", ri.keyID),
				slog.String("remote", s.clientIP(r)))
		}()
		next.ServeHTTP(rec, r)
	})
}

// routeName is mux middleware recording the matched route template for logs and metrics.
func routeName(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, err := mux.CurrentRoute(r).GetPathTemplate(); err == nil {
			nameRoute(r, t)
		}
		next.ServeHTTP(w, r)
	})
}

// nameRoute records the route template t of r for logs, metrics and the request's span.
func nameRoute(r *http.Request, t string) {
	info(r).route = t
	// By template, like the metrics: job ids do not become span names.
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.SetName(r.Method + " " + t)
		span.SetAttributes(attribute.String("http.route", t))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
