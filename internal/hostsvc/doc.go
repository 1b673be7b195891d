// Package hostsvc holds both ends of the services conductord gives hosts
// so that a host makes no JetStream consumer of its own: a consumer's
// deliveries go where its maker says, and the server does not look inside
// the request that makes it, so a host free to make consumers could aim
// jobs or cancels at another host's command subject (docs/security.md,
// "What a host may do").
//
//   - Consumers: a host asks for the consumers of one of its job types
//     (subject.Space.ConsumersAs); conductord makes them, one per
//     priority, each filtered on its jobs' subject, with settings it
//     bounds. The host then pulls from them and acks, which its grant
//     allows.
//   - Cancels: conductord follows the cancel bucket, holds its ids for the
//     bucket's TTL and numbers each new one; a host reads the ids held,
//     page by page (subject.Space.CancelsAs), and follows the numbered
//     ones on subject.Space.CancelFeed. A gap in the numbers, a
//     reconnect, another conductord (a new epoch), or a check every
//     FollowCheck that finds ids it missed makes it read them again.
//
// A host with no credential of its own (an open conductor, the shared
// token) uses the subjects without a credential id
// (subject.Space.ConsumersOf, CancelsOf), which only an admin may publish
// to.
package hostsvc
