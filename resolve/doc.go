// Package resolve is linkhop's link-resolving engine.
//
// It follows a short or ad-gated link hop by hand — HTTP redirects, the Refresh header,
// <meta http-equiv=refresh>, literal JavaScript location assignments, known wrapper URLs and
// provider rules — recording every hop, until it reaches the first URL whose host is not a
// provider host. That URL is the target; it is never fetched. Each provider's family says how
// its pages are walked (family.go, form.go): AdLinkFly's countdown and form, adf.ly's ysmm,
// adfoc.us's click_url. A provider page with no literal target has its scripts run in the
// sandbox of package resolve/sandbox. In any-host mode, links on other hosts are walked too,
// fetching every URL until a page with no further hop.
//
// Every connection goes through a dial-time address guard (NewTransport), shared with webhook
// deliveries, so redirects to internal hosts and DNS rebinding fail. A Service adds the shared
// Redis cache, the negative cache for removed links, one upstream resolve per URL across all
// workers, and per-provider latency measurements on top of a Resolver.
//
// Retrying transient failures is the caller's business (asynq in package jobs): the Resolver only
// classifies outcomes as CONTRACT §6 names them, in an *Error.
package resolve
