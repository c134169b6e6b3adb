package httpapi

import (
	"strconv"
	"time"

	"github.com/linkhop/linkhop/resolve"
)

// The members of a stored job record (jobs.Record's JSON names), as appendPlainView knows them.
const (
	mJobID = iota
	mStatus
	mURL
	mTargetURL
	mProvider
	mTier
	mError
	mErrorDetail
	mCreditsCharged
	mCreatedAt
	mUpdatedAt
	mCompletedAt
	mHops
	mWebhook
	nViewMembers // the members above are the view's; those below are only checked
	mOther
)

// recordMember returns the index of a member of a stored record and the kinds of value
// appendPlainView takes for it ('s' string, 'n' null, 'i' integer, 't' time, 'a' empty array).
func recordMember(name []byte) (int, string) {
	switch string(name) {
	case "job_id":
		return mJobID, "s"
	case "status":
		return mStatus, "s"
	case "url":
		return mURL, "s"
	case "target_url":
		return mTargetURL, "sn"
	case "provider":
		return mProvider, "s"
	case "tier":
		return mTier, "s"
	case "error":
		return mError, "sn"
	case "error_detail":
		return mErrorDetail, "sn"
	case "credits_charged":
		return mCreditsCharged, "i"
	case "created_at":
		return mCreatedAt, "t"
	case "updated_at":
		return mUpdatedAt, "t"
	case "completed_at":
		return mCompletedAt, "tn"
	case "hops":
		return mHops, "an"
	case "webhook":
		return mWebhook, "n"
	case "key_id", "webhook_url", "idempotency_key", "task", "webhook_task":
		return mOther, "s"
	case "credits_held", "attempts", "reaps":
		return mOther, "i"
	case "resume":
		return mOther, "n"
	}
	return -1, ""
}

// appendPlainView is appendJobView's quick way for the common record (a job queued or running:
// no hops, no webhook state yet) whose strings are plain printable ASCII: it copies the stored
// strings as they are, which is what encoding them again would write, instead of decoding the
// record. ok is false for anything else — another member, a value of another kind, a string
// with an escape or a byte encoding/json would escape, a member twice, a time not in UTC, a
// record that is not one compact JSON object — and appendJobView then decodes the record.
// FuzzPlainView holds it to the decoding path.
func appendPlainView(dst, raw []byte, balance *int64) (_ []byte, ok bool) {
	var v [nViewMembers][]byte // each view member's value as stored
	var times [3]time.Time     // created_at, updated_at, completed_at
	var credits int64
	seen := 0 // bits of the members read, against duplicates
	i := 0
	if len(raw) < 2 || raw[0] != '{' {
		return dst, false
	}
	i = 1
	for {
		name, n := rawPlainString(raw, i)
		if n < 0 || n >= len(raw) || raw[n] != ':' {
			return dst, false
		}
		m, kinds := recordMember(name[1 : len(name)-1])
		if m < 0 {
			return dst, false
		}
		if m != mOther {
			if seen&(1<<m) != 0 {
				return dst, false
			}
			seen |= 1 << m
		}
		i = n + 1
		if i >= len(raw) {
			return dst, false
		}
		var val []byte
		var kind byte
		switch c := raw[i]; {
		case c == '"':
			val, n = rawPlainString(raw, i)
			kind = 's'
		case c == 'n':
			val, n, kind = raw[i:min(i+4, len(raw))], i+4, 'n'
			if string(val) != "null" {
				return dst, false
			}
		case c == '[':
			val, n, kind = raw[i:min(i+2, len(raw))], i+2, 'a'
			if string(val) != "[]" {
				return dst, false
			}
		case c == '-' || '0' <= c && c <= '9':
			val, n = plainInt(raw, i)
			kind = 'i'
		default:
			return dst, false
		}
		if n < 0 || n > len(raw) {
			return dst, false
		}
		if kind == 's' && (kinds == "t" || kinds == "tn") {
			kind = 't'
		}
		if !containsByte(kinds, kind) {
			return dst, false
		}
		switch {
		case kind == 't':
			t, ok := plainTime(val[1 : len(val)-1])
			if !ok {
				return dst, false
			}
			switch m {
			case mCreatedAt:
				times[0] = t
			case mUpdatedAt:
				times[1] = t
			case mCompletedAt:
				times[2] = t
			}
		case kind == 'i' && m == mCreditsCharged:
			c, err := strconv.ParseInt(string(val), 10, 64)
			if err != nil {
				return dst, false
			}
			credits = c
		}
		if m != mOther {
			v[m] = val
		}
		i = n
		if i >= len(raw) {
			return dst, false
		}
		if raw[i] == '}' {
			if i+1 != len(raw) {
				return dst, false
			}
			break
		}
		if raw[i] != ',' {
			return dst, false
		}
		i++
	}
	if seen != 1<<nViewMembers-1 {
		return dst, false // a member missing: the decoding path knows its zero value
	}
	b := append(dst, `{"job_id":`...)
	b = append(b, v[mJobID]...)
	b = append(b, `,"status":`...)
	b = append(b, v[mStatus]...)
	b = append(b, `,"url":`...)
	b = append(b, v[mURL]...)
	b = append(b, `,"target_url":`...)
	b = append(b, v[mTargetURL]...)
	b = append(b, `,"provider":`...)
	if len(v[mProvider]) == 2 { // ""
		b = append(b, "null"...)
	} else {
		b = append(b, v[mProvider]...)
	}
	b = append(b, `,"tier":`...)
	if t := string(v[mTier][1 : len(v[mTier])-1]); t == resolve.TierStandard || t == resolve.TierPremium { // tierPtr
		b = append(b, v[mTier]...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"error":`...)
	b = append(b, v[mError]...)
	b = append(b, `,"error_detail":`...)
	b = append(b, v[mErrorDetail]...)
	b = appendCredits(b, credits, balance)
	b = append(b, `,"created_at":`...)
	b = appendStamp(b, &times[0], false)
	b = append(b, `,"updated_at":`...)
	b = appendStamp(b, &times[1], false)
	b = append(b, `,"completed_at":`...)
	if v[mCompletedAt][0] == 'n' {
		b = append(b, "null"...)
	} else {
		b = appendStamp(b, &times[2], true)
	}
	return append(b, `,"hops":[],"webhook":null}`...), true
}

func containsByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

// rawPlainString returns the JSON string starting at raw[i] (quotes included) and the index after
// it, or -1 unless it is printable ASCII without escapes and without the <, > and & that
// encoding/json escapes: then its bytes are what encoding/json writes for its value.
func rawPlainString(raw []byte, i int) ([]byte, int) {
	if i >= len(raw) || raw[i] != '"' {
		return nil, -1
	}
	for j := i + 1; j < len(raw); j++ {
		switch c := raw[j]; {
		case c == '"':
			return raw[i : j+1], j + 1
		case c < 0x20 || c > 0x7e || c == '\\' || c == '<' || c == '>' || c == '&':
			return nil, -1
		}
	}
	return nil, -1
}

// plainInt returns the JSON integer starting at raw[i] and the index after it, or -1 for any
// other number (a fraction, an exponent, a leading zero).
func plainInt(raw []byte, i int) ([]byte, int) {
	j := i
	if j < len(raw) && raw[j] == '-' {
		j++
	}
	start := j
	for j < len(raw) && '0' <= raw[j] && raw[j] <= '9' {
		j++
	}
	if j == start || raw[start] == '0' && j-start > 1 {
		return nil, -1
	}
	if j < len(raw) && (raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E') {
		return nil, -1
	}
	return raw[i:j], j
}

// plainTime parses an RFC 3339 time in UTC ("Z") as encoding/json reads one, with the layout's
// digits in place (time.Parse alone would take a one-digit hour, which encoding/json refuses).
func plainTime(s []byte) (time.Time, bool) {
	const pattern = "dddd-dd-ddTdd:dd:dd"
	if len(s) < len(pattern)+1 || s[len(s)-1] != 'Z' {
		return time.Time{}, false
	}
	for k := range len(pattern) {
		if p := pattern[k]; p == 'd' && (s[k] < '0' || s[k] > '9') || p != 'd' && s[k] != p {
			return time.Time{}, false
		}
	}
	if frac := s[len(pattern) : len(s)-1]; len(frac) > 0 {
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return time.Time{}, false
		}
		for _, c := range frac[1:] {
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	return t, err == nil
}
