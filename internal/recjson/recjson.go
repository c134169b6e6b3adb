// Package recjson encodes and decodes what linkhop stores in Redis and reads back on every
// job: job records, cached outcomes and task payloads. It writes byte for byte what
// encoding/json writes (field order, omitempty, escaping, invalid UTF-8, times) and reads what
// encoding/json reads, three to four times faster (github.com/segmentio/encoding/json): a
// resolved job decodes its record once and encodes it at least once, and encoding/json's
// reflection was about a tenth of a worker's CPU per job
// (docs/benchmarks.md#end-to-end-scenario-4-round-trips-met-jobss-and-latency-missed).
//
// Request bodies stay with encoding/json: their errors are worded for clients
// (httpapi/decode.go), and they are not on a path that runs several times per job.
package recjson

import "github.com/segmentio/encoding/json"

// Marshal is encoding/json.Marshal: the same bytes for the same value. The one difference:
// a time encoding/json refuses (a year outside 0–9999, an offset of a day or more) is written
// rather than refused; linkhop's times come from its clock and are never such.
// jobs.TestRecordCodecMatchesEncodingJSON holds the two together.
func Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal is encoding/json.Unmarshal for the values linkhop stores.
func Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
