package jobs

import (
	"strconv"
	"time"

	"github.com/linkhop/linkhop/internal/jsonstr"
)

// appendNewRecord appends the JSON of r, a record in the shape createMany stores for a new job,
// to b: byte for byte what json.Marshal writes for it (field order, omitempty, nulls, escaping),
// without reflection, which was the largest part of a batch item's encoding. ok is false for a
// record outside that shape (anything the worker sets later: an outcome, hops, a webhook state,
// a parked walk, a replaced task) or with a time encoding/json refuses; the caller then uses
// json.Marshal. TestAppendNewRecordMatchesMarshal holds the two to the same bytes.
func appendNewRecord(b []byte, r *Record) (_ []byte, ok bool) {
	if r.TargetURL != nil || r.Error != nil || r.ErrorDetail != nil || r.Attempts != 0 || r.CompletedAt != nil ||
		len(r.Hops) != 0 || r.Webhook != nil || r.Resume != nil || r.Task != "" || r.Reaps != 0 || r.WebhookTask != "" ||
		!marshalable(r.CreatedAt) || !marshalable(r.UpdatedAt) {
		return b, false
	}
	b = append(b, `{"job_id":`...)
	b = jsonstr.Append(b, r.ID)
	b = append(b, `,"key_id":`...)
	b = jsonstr.Append(b, r.KeyID)
	b = append(b, `,"status":`...)
	b = jsonstr.Append(b, string(r.Status))
	b = append(b, `,"url":`...)
	b = jsonstr.Append(b, r.URL)
	if r.WebhookURL != "" {
		b = append(b, `,"webhook_url":`...)
		b = jsonstr.Append(b, r.WebhookURL)
	}
	if r.IdempotencyKey != "" {
		b = append(b, `,"idempotency_key":`...)
		b = jsonstr.Append(b, r.IdempotencyKey)
	}
	b = append(b, `,"target_url":null,"provider":`...)
	b = jsonstr.Append(b, r.Provider)
	b = append(b, `,"tier":`...)
	b = jsonstr.Append(b, r.Tier)
	b = append(b, `,"error":null,"error_detail":null,"credits_charged":`...)
	b = strconv.AppendInt(b, r.CreditsCharged, 10)
	if r.CreditsHeld != 0 {
		b = append(b, `,"credits_held":`...)
		b = strconv.AppendInt(b, r.CreditsHeld, 10)
	}
	b = append(b, `,"created_at":"`...)
	b = r.CreatedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","updated_at":"`...)
	b = r.UpdatedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","completed_at":null,"hops":`...)
	if r.Hops == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, "[]"...)
	}
	return append(b, `,"webhook":null}`...), true
}

// marshalable reports whether time.Time.MarshalJSON encodes t (as RFC 3339 with nanoseconds,
// which AppendFormat then writes alike): a year of four digits and a zone offset under a day.
func marshalable(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*3600 && off < 24*3600
}
