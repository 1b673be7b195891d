// Package lookup keeps named lookups: small JSON values by key, grouped
// by lookup name ("prices" -> "sku-42" -> 12.5), which workers on every
// host read and write and which survive a conductord restart. They are
// what okanjo-conductor's master held in memory and served its workers
// by request/reply.
//
// A Store keeps them in one JetStream key-value bucket: every write is
// durable once it returns, every reader sees it, and a Watch follows
// them as they change (which is how a host keeps a cache it can trust:
// docs/lookups.md).
//
// Names are 1 to 64 letters, digits, '-' and '_'. A key is any non-empty
// UTF-8 string of at most 256 bytes; one that is not a key the bucket
// takes as it is is stored encoded, and read back as it was written. A
// value is any JSON value of at most Store's MaxValue bytes (64 KiB by
// default), stored compact.
package lookup
