package subject

import "strings"

// The JetStream subjects a role is granted (pkg/conductor, grants.go):
// the API's requests, the acks of a consumer's messages and the flow
// control replies of a push consumer, named here like every other.

// JSAPI is the subject of JetStream API request op ("STREAM.INFO",
// "CONSUMER.MSG.NEXT", …) with its arguments (a stream, a consumer, a
// wildcard).
func JSAPI(op string, args ...string) string {
	return strings.Join(append([]string{"$JS.API." + op}, args...), ".")
}

// JSAcks matches the ack subjects of the messages that consumer of stream
// delivers (a wildcard consumer: any of the stream's).
func JSAcks(stream, consumer string) string {
	return "$JS.ACK." + stream + "." + consumer + ".>"
}

// JSFlowControl matches the flow control replies of the push consumers of
// stream (a key-value watch is one).
func JSFlowControl(stream string) string { return "$JS.FC." + stream + ".>" }

// KVStream is the name of the stream behind the key-value bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVAll matches every key of bucket.
func KVAll(bucket string) string { return "$KV." + bucket + ".>" }

// Host's and Logs' wildcards, for a grant to one host.

// TypeJobEvents matches JobEvent of every status of type typ (or "*").
func (s Space) TypeJobEvents(typ string) string { return s.JobEvent(typ, "*") }

// Controls matches Control of every host.
func (s Space) Controls() string { return s.Control("*") }

// AllEvents matches every event: of jobs, workers, pools and batches.
func (s Space) AllEvents() string { return s.prefix() + ".events.>" }

// BatchEvents matches BatchEvent of every batch.
func (s Space) BatchEvents() string { return s.prefix() + ".events.batch.>" }

// Inboxes: conductord and workerd answer a request only on an inbox
// (IsInbox), and a credential's request only on its own (CredentialInbox):
// a requester names the reply subject, and an answer published anywhere
// else, with the answerer's powers, would be a write the requester may not
// make (a stream's subject, a JetStream API request).

// IsInbox reports whether reply is an inbox subject: under "_INBOX.",
// or "_R_.", the reply subjects the server makes for a request that came
// through an account's service import (no client may name one), with no
// wildcard.
func IsInbox(reply string) bool {
	return (strings.HasPrefix(reply, "_INBOX.") || strings.HasPrefix(reply, "_R_.")) && !strings.ContainsAny(reply, "*> \t")
}

// ControlReply is the reply subject of a command sent to a host, made of
// a fresh inbox: a host may publish on such subjects only
// (ControlReplies), so that a host that learns one command's reply
// subject can answer nothing else of its sender's.
func ControlReply(inbox string) string { return inbox + ".ctl" }

// ControlReplies match ControlReply of any inbox: "_INBOX.<nuid>.ctl" and
// "_INBOX.c-<id>.<nuid>.ctl".
func ControlReplies() []string { return []string{"_INBOX.*.ctl", "_INBOX.*.*.ctl"} }

// CredentialInbox is the inbox prefix of credential id's connections.
func CredentialInbox(id string) string { return "_INBOX.c-" + id }

// IsInboxOf reports whether reply is an inbox of credential id.
func IsInboxOf(reply, id string) bool {
	return IsInbox(reply) && strings.HasPrefix(reply, CredentialInbox(id)+".")
}
