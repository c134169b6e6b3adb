package httpapi

import (
	"bytes"
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3.1 description of every route, response and problem code.
// Tests validate real answers of the handlers against it, so it cannot drift from the code.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3.1 document that GET /openapi.json serves. The binaries serve
// it through the route; this is for the conformance tests (an external test package) and for
// tools that want the document without a running API.
func OpenAPI() []byte { return bytes.Clone(openAPIDoc) }

// getOpenAPI serves the document without authentication: code generators and API explorers
// fetch it before they have a key.
func (s *Server) getOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPIDoc)
}
