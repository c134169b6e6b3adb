package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"

	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/resolve"
)

// MaxBodyBytes is the largest request body accepted (docs/api.md#conventions).
const MaxBodyBytes = 64 << 10

// readJSON reads a JSON object body strictly into dst: JSON content type, at most
// MaxBodyBytes, no unknown fields, nothing after the object.
func readJSON(w http.ResponseWriter, r *http.Request, dst any) *problem.Problem {
	return readJSONMax(w, r, dst, MaxBodyBytes)
}

// readJSONMax is readJSON with a body limit of its own (a batch's is larger).
func readJSONMax(w http.ResponseWriter, r *http.Request, dst any, limit int64) *problem.Problem {
	body, p := readBody(w, r, limit)
	if p != nil {
		return p
	}
	return decodeStrict(body, dst)
}

// readBody reads a JSON body of at most limit bytes: the first half of readJSONMax.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *problem.Problem) {
	// The common spelling needs no parsing.
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, problem.New(problem.UnsupportedMediaType, "Send the body as Content-Type: application/json.")
		}
	}
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(limit)
		}
		return nil, invalid("", "the body could not be read")
	}
	return body, nil
}

// decodeStrict decodes a body read by readBody into dst, strictly: the second half of
// readJSONMax.
func decodeStrict(body []byte, dst any) *problem.Problem {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return invalid("", "the body is empty; send a JSON object")
	}
	if trimmed[0] != '{' {
		return invalid("", "the body must be a JSON object")
	}
	if !utf8.Valid(body) {
		return invalid("", "the body is not valid UTF-8")
	}
	// First the syntax (with the offset of a mistake), then the keys (unknown, repeated or
	// differently cased ones, named), then the types of the values.
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return decodeProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("", "unexpected data after the JSON object")
	}
	if p := exactKeys(obj, dst); p != nil {
		return p
	}
	dec = json.NewDecoder(bytes.NewReader(obj))
	// exactKeys checked the top level; this keeps objects nested in a body just as strict.
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err)
	}
	return nil
}

// exactKeys refuses what encoding/json lets through: a key that matches a field only
// case-insensitively ("URL") and a key given twice. Both are ambiguous — another parser in
// front of linkhop may read the other value — so a strict API answers 400 instead of guessing.
func exactKeys(body []byte, dst any) *problem.Problem {
	names := map[string]bool{}
	t := reflect.TypeOf(dst)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		names[name] = true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the opening brace, checked by the caller
		return invalid("", "malformed JSON")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return invalid("", "malformed JSON")
		}
		switch {
		case !names[key]:
			return invalid(key, "unknown field")
		case seen[key]:
			return invalid(key, "given more than once")
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return invalid("", "malformed JSON")
		}
	}
	return nil
}

func tooLarge(limit int64) *problem.Problem {
	return problem.New(problem.PayloadTooLarge, fmt.Sprintf("The body is larger than %d bytes.", limit))
}

func invalid(field, reason string) *problem.Problem {
	detail := "The request body is invalid: " + reason + "."
	if field != "" {
		detail = fmt.Sprintf("The field %s is invalid: %s.", field, reason)
	}
	return problem.New(problem.InvalidRequest, detail).WithErrors(problem.FieldError{Field: field, Reason: reason})
}

func decodeProblem(err error) *problem.Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("", fmt.Sprintf("malformed JSON at byte %d", syn.Offset))
	case errors.As(err, &typ):
		return invalid(typ.Field, "must be a "+jsonType(typ.Type))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "the JSON object is not complete")
	}
	// What is left: a value a field's own decoder refused, or an unknown field in a nested
	// object (encoding/json gives that one no type to tell it by).
	return invalid("", "the JSON object does not have the expected shape")
}

func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	}
	return "JSON " + t.Kind().String()
}

// newValidator registers linkhop's URL rules on validator v10.
func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		return name
	})
	// absurl: parses as an absolute URL with a host and no userinfo.
	_ = v.RegisterValidation("absurl", func(fl validator.FieldLevel) bool {
		_, reason := checkURL(fl.Field().String())
		return reason == ""
	})
	return v
}

// checkURL parses s as an absolute URL with a host and without userinfo; reason says what is
// wrong otherwise.
func checkURL(s string) (*url.URL, string) {
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == ' ' {
			return nil, "must not contain spaces or control characters"
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, "must be a valid URL"
	case u.Scheme == "" || u.Opaque != "":
		return nil, "must be an absolute http(s) URL"
	case u.User != nil:
		return nil, "must not contain userinfo"
	case u.Host == "" || u.Hostname() == "":
		return nil, "must have a host"
	case !utf8.ValidString(u.Hostname()):
		// url.Parse decodes %-escapes in a host (for internationalised names), so "%ff" makes
		// a host of bytes that no name can have.
		return nil, "must have a valid host name"
	}
	// url.Parse takes any digits as a port; a URL that no connection can reach is a mistake
	// to report now, not a job to fail later.
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, "must have a port between 1 and 65535"
		}
	}
	return u, ""
}

// resolveRequest is the body of POST /v1/resolve.
type resolveRequest struct {
	URL            string  `json:"url" validate:"required,max=2048,absurl"`
	WebhookURL     *string `json:"webhook_url" validate:"omitempty,max=2048,absurl"`
	IdempotencyKey *string `json:"idempotency_key" validate:"omitempty,min=1,max=128,printascii"`
}

// validationProblem turns validator errors into one invalid_request with every field.
func validationProblem(err error) *problem.Problem {
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		return invalid("", "the request is invalid")
	}
	var fes []problem.FieldError
	for _, fe := range verrs {
		fes = append(fes, problem.FieldError{Field: fe.Field(), Reason: reasonFor(fe)})
	}
	p := problem.New(problem.InvalidRequest, "The request has invalid fields; see errors.")
	return p.WithErrors(fes...)
}

func reasonFor(fe validator.FieldError) string {
	switch fe.Tag() {
	case "required":
		return "is required"
	case "max":
		return "must be at most " + fe.Param() + " characters"
	case "min":
		return "must be at least " + fe.Param() + " characters"
	case "printascii":
		return "must be printable ASCII"
	case "absurl":
		_, reason := checkURL(fmt.Sprint(fe.Value()))
		if s, ok := fe.Value().(*string); ok && s != nil {
			_, reason = checkURL(*s)
		}
		return reason
	}
	return "is invalid"
}

// checkWebhookURL applies the webhook_url rules beyond syntax: https and a public host,
// unless private targets are allowed (dev and tests).
func checkWebhookURL(raw string, allowPrivate bool) string {
	u, reason := checkURL(raw)
	if reason != "" {
		return reason
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && !(allowPrivate && scheme == "http") {
		return "must use https"
	}
	if allowPrivate {
		return ""
	}
	if err := resolve.CheckWebhookHost(u.Hostname()); err != nil {
		return "must not point at an internal, private or reserved address"
	}
	return ""
}

// validIdempotencyKey mirrors the body rule for the Idempotency-Key header.
func validIdempotencyKey(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
