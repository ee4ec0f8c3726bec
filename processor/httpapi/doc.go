// Package httpapi is serve's HTTP API, for orchestrators, Prometheus and operators' scripts:
//
//	GET /metrics          kreplay's metrics and franz-go's client metrics (Prometheus text)
//	GET /healthz          200 while the process is alive, from the start
//	GET /readyz           200 when PostgreSQL and Kafka answer; 503 with the reason otherwise
//	GET /api/replays      the versions' statuses (the JSON of `kreplay status -o json`)
//	GET /api/assignments  the partitions this instance consumes per version, and whether it leads
//
// It reads what it serves from a [Source] (the processor) and changes nothing.
package httpapi
