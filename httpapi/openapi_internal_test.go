package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

// TestOpenAPICoversEveryRoute holds router.go and openapi.json to the same set of routes and
// methods, so a route cannot be added or removed on one side only.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if method != "parameters" && method != "summary" && method != "description" {
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	served := map[string]bool{}
	// With a queue UI, so that its routes are registered too (any handler will do).
	router := New(Deps{QueuesUI: http.NotFoundHandler()}).router()
	err := router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		// The queue UI is asynqmon, a third-party app mounted on this prefix for every method
		// and every sub-path (its assets and its JSON API): those are its own, not ours to
		// describe. The document has its entry page only, as one GET.
		if path == QueuesPath+"/" {
			served[http.MethodGet+" "+path] = true
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			return fmt.Errorf("route %s: %w", path, err)
		}
		for _, m := range methods {
			served[m+" "+path] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing, undocumented []string
	for k := range served {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !served[k] {
			missing = append(missing, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(undocumented)
	if len(undocumented) > 0 {
		t.Errorf("routes served but not in openapi.json: %v", undocumented)
	}
	if len(missing) > 0 {
		t.Errorf("operations in openapi.json that no route serves: %v", missing)
	}
}
