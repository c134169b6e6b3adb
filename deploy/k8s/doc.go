// Package k8s holds linkhop's Kubernetes manifests (a kustomize base and the dev and prod
// overlays) and the test that keeps them honest.
//
// It is a separate Go module so that the Kubernetes API types and kustomize, which only the
// manifest test needs, stay out of the service's own dependency graph.
package k8s
