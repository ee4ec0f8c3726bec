// Package embedded runs an in-process Kafka broker, franz-go's kfake: the real wire protocol,
// in memory, with no TLS or SASL. `kreplay serve --brokers embedded` and `kreplay demo` use it,
// for development only: its records live as long as the process.
package embedded
