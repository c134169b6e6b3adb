package client_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/linkhop/linkhop/client"
)

// The examples run against an in-memory fake of the API (fake_test.go), so their output is
// the same every time; point client.New at a real service instead, such as the one
// `go run ./cmd/api -dev` starts.

func ExampleClient_ResolveAndWait() {
	srv := newFake().serve()
	defer srv.Close()

	c := client.New(srv.URL, "sk_live_fake")
	job, err := c.ResolveAndWait(context.Background(), "http://sho.rt/hello")
	var je *client.JobError
	switch {
	case errors.As(err, &je):
		fmt.Println("the link did not resolve:", je.Code)
	case err != nil:
		fmt.Println("error:", err)
	default:
		fmt.Println(job.TargetURL)
		for _, h := range job.Hops {
			fmt.Println(" ", h.Kind, h.URL)
		}
	}
	// Output:
	// https://example.com/dest/hello
	//   start http://sho.rt/hello
	//   http https://example.com/dest/hello
}

func ExampleError() {
	srv := newFake().serve()
	defer srv.Close()

	c := client.New(srv.URL, "sk_live_fake")
	_, err := c.Resolve(context.Background(), client.ResolveRequest{URL: "https://example.org/not-a-shortener"})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code)
		fmt.Println(e.Detail)
	}
	// Output:
	// 422 unsupported_link
	// The host of url is not a provider's.
}

func ExampleClient_ResolveMany() {
	srv := newFake().serve()
	defer srv.Close()

	c := client.New(srv.URL, "sk_live_fake")
	links := []string{"http://sho.rt/a", "http://sho.rt/gone", "https://example.org/x"}
	outcomes, err := c.ResolveMany(context.Background(), links, nil)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	for _, o := range outcomes {
		var e *client.Error
		var je *client.JobError
		switch {
		case errors.As(o.Err, &e):
			fmt.Printf("%s\terror:%s\n", o.URL, e.Code)
		case errors.As(o.Err, &je):
			fmt.Printf("%s\terror:%s\n", o.URL, je.Code)
		default:
			fmt.Printf("%s\t%s\n", o.URL, o.Job.TargetURL)
		}
	}
	// Output:
	// http://sho.rt/a	https://example.com/dest/a
	// http://sho.rt/gone	error:link_removed
	// https://example.org/x	error:unsupported_link
}
