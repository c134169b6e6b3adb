package httpapi

import (
	"fmt"
	"strconv"
	"time"

	"github.com/linkhop/linkhop/internal/jsonstr"
	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/internal/stamp"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// viewRecord is the part of a stored job record (jobs.Record's JSON) that its view shows: a
// poll decodes only these fields, and skips the worker's bookkeeping (the parked walk, task ids).
type viewRecord struct {
	ID             string          `json:"job_id"`
	Status         jobs.Status     `json:"status"`
	URL            string          `json:"url"`
	TargetURL      *string         `json:"target_url"`
	Provider       string          `json:"provider"`
	Tier           string          `json:"tier"`
	Error          *string         `json:"error"`
	ErrorDetail    *string         `json:"error_detail"`
	CreditsCharged int64           `json:"credits_charged"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	CompletedAt    *time.Time      `json:"completed_at"`
	Hops           []resolve.Hop   `json:"hops"`
	Webhook        *webhooks.State `json:"webhook"`
}

// appendJobView appends the view of a stored job record (docs/api.md#get-v1jobsjob_id), with
// the key's balance, to dst: byte for byte what encoding/json writes for jobView (viewOf), field
// order, null members, HTML-safe escaping and all, without building the view and encoding it by
// reflection, which was a large part of a poll's CPU. TestJobViewMatchesEncoding holds the two
// to the same bytes.
func appendJobView(dst, raw []byte, balance *int64) ([]byte, error) {
	if b, ok := appendPlainView(dst, raw, balance); ok {
		return b, nil
	}
	return appendDecodedView(dst, raw, balance)
}

// appendDecodedView is appendJobView by decoding the record, for any record.
func appendDecodedView(dst, raw []byte, balance *int64) ([]byte, error) {
	var r viewRecord
	if err := recjson.Unmarshal(raw, &r); err != nil {
		return dst, fmt.Errorf("jobs: decoding: %w", err)
	}
	b := append(dst, `{"job_id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"status":`...)
	b = appendString(b, string(r.Status))
	b = append(b, `,"url":`...)
	b = appendString(b, r.URL)
	b = append(b, `,"target_url":`...)
	b = appendStringPtr(b, r.TargetURL)
	b = append(b, `,"provider":`...)
	if r.Provider == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, r.Provider)
	}
	b = append(b, `,"tier":`...)
	b = appendStringPtr(b, tierPtr(r.Tier))
	b = append(b, `,"error":`...)
	b = appendStringPtr(b, r.Error)
	b = append(b, `,"error_detail":`...)
	b = appendStringPtr(b, r.ErrorDetail)
	b = appendCredits(b, r.CreditsCharged, balance)
	b = append(b, `,"created_at":`...)
	b = appendStamp(b, &r.CreatedAt, false)
	b = append(b, `,"updated_at":`...)
	b = appendStamp(b, &r.UpdatedAt, false)
	b = append(b, `,"completed_at":`...)
	b = appendStamp(b, r.CompletedAt, true)
	b = append(b, `,"hops":[`...)
	for i, h := range r.Hops {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"url":`...)
		b = appendString(b, h.URL)
		b = append(b, `,"status":`...)
		b = appendIntPtr(b, h.Status)
		b = append(b, `,"kind":`...)
		b = appendString(b, h.Kind)
		b = append(b, '}')
	}
	b = append(b, `],"webhook":`...)
	if st := r.Webhook; st == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"url":`...)
		b = appendString(b, st.URL)
		b = append(b, `,"status":`...)
		b = appendString(b, st.Status)
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(st.Attempts), 10)
		b = append(b, `,"last_attempt_at":`...)
		b = appendStamp(b, st.LastAttemptAt, true)
		b = append(b, `,"last_status_code":`...)
		b = appendIntPtr(b, st.LastStatusCode)
		b = append(b, `,"last_error":`...)
		b = appendStringPtr(b, st.LastError)
		b = append(b, `,"next_attempt_at":`...)
		b = appendStamp(b, st.NextAttemptAt, true)
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendStamp appends t in stamp's format; a nil time, or with orNull a zero one, is null
// (stamp.FormatPtr), a zero time otherwise the zero time's stamp (stamp.Format).
func appendStamp(b []byte, t *time.Time, orNull bool) []byte {
	if t == nil || orNull && t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, stamp.Layout)
	return append(b, '"')
}

func appendIntPtr(b []byte, n *int) []byte {
	if n == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, int64(*n), 10)
}

func appendStringPtr(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendString(b, *s)
}

// appendString appends s as a JSON string exactly as encoding/json writes it.
func appendString(b []byte, s string) []byte { return jsonstr.Append(b, s) }

// appendCredits appends a job view's "credits_charged" and "balance" members (null without a
// balance), for both ways of writing the view.
func appendCredits(b []byte, charged int64, balance *int64) []byte {
	b = append(b, `,"credits_charged":`...)
	b = strconv.AppendInt(b, charged, 10)
	b = append(b, `,"balance":`...)
	if balance == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, *balance, 10)
}
