package proto

import (
	"strconv"

	"github.com/conductor-run/conductor/internal/jsonfast"
)

// The channel carries tens of thousands of short lines a second, and
// reflection-based encoding/json showed up in both ends' profiles. The
// functions below handle the common lines by hand. They never report an
// error: for anything they are unsure of they decline, and Decode and Append
// use encoding/json, which decides. What they accept they must turn into
// exactly what encoding/json would (fast_test.go checks this).

// decodeFast parses line if it is a flat object whose keys are Message's json
// names, spelled exactly and each at most once, with plain values: strings
// without escapes, integers, true or false, and any JSON for payload, result
// and data (but not null). It reports false for any other line.
func decodeFast(line []byte) (Message, bool) {
	var m Message
	l := jsonfast.NewLexer(line)
	if !l.Next('{') {
		return Message{}, false
	}
	var seen uint32 // the fields set so far, a bit each
	for {
		key, ok := l.Str()
		if !ok || !l.Next(':') {
			return Message{}, false
		}
		l.Space()
		var bit uint32
		switch string(key) {
		case "op":
			bit = 1 << 0
			var s []byte
			s, ok = l.Str()
			m.Op = op(s)
		case "id":
			bit = 1 << 1
			m.ID, ok = l.Text()
		case "type":
			bit = 1 << 2
			m.Type, ok = l.Text()
		case "payload":
			bit = 1 << 3
			m.Payload, ok = l.Raw()
		case "attempt":
			bit = 1 << 4
			m.Attempt, ok = l.Int()
		case "result":
			bit = 1 << 5
			m.Result, ok = l.Raw()
		case "error":
			bit = 1 << 6
			m.Error, ok = l.Text()
		case "permanent":
			bit = 1 << 7
			m.Permanent, ok = l.Bool()
		case "data":
			bit = 1 << 8
			m.Data, ok = l.Raw()
		case "prefetch":
			bit = 1 << 9
			m.Prefetch, ok = l.Int()
		case "redelivered":
			bit = 1 << 10
			m.Redelivered, ok = l.Bool()
		case "req":
			bit = 1 << 11
			var n uint64
			n, ok = l.Uint()
			m.Req = n
		case "do":
			bit = 1 << 12
			m.Do, ok = l.Text()
		case "name":
			bit = 1 << 13
			m.Name, ok = l.Text()
		case "key":
			bit = 1 << 14
			m.Key, ok = l.Text()
		case "value":
			bit = 1 << 15
			m.Value, ok = l.Raw()
		case "rev":
			bit = 1 << 16
			m.Rev, ok = l.Uint()
		case "code":
			bit = 1 << 17
			m.Code, ok = l.Int()
		case "cache":
			bit = 1 << 18
			m.Cache, ok = l.Int()
		case "keep":
			bit = 1 << 19
			m.Keep, ok = l.Bool()
		case "command":
			bit = 1 << 20
			m.Command, ok = l.Text()
		case "messages":
			bit = 1 << 21
			m.Messages, ok = l.Bool()
		case "framed":
			bit = 1 << 22
			m.Framed, ok = l.Bool()
		case "size":
			bit = 1 << 23
			m.Size, ok = l.Int()
		default:
			// Unknown keys may still name a field: encoding/json matches
			// them ignoring case.
			return Message{}, false
		}
		if !ok || seen&bit != 0 {
			return Message{}, false
		}
		seen |= bit
		if l.Next(',') {
			continue
		}
		if !l.Next('}') {
			return Message{}, false
		}
		return m, l.Done()
	}
}

// knownOps are the ops decodeFast returns without allocating.
var knownOps = [...]Op{OpJob, OpShutdown, OpCancel, OpReady, OpDone, OpBusy, OpMessage, OpLookup, OpReply, OpDrop, OpRequest, OpCount}

// op returns s as an Op, sharing the constant when it is a known op: almost
// every line has one, and a string for each would be garbage.
func op(s []byte) Op {
	for _, o := range knownOps {
		if string(o) == string(s) {
			return o
		}
	}
	return Op(s)
}

// appendFast appends m as encoding/json would, plus the newline. It declines
// (ok false, b untouched) when a raw field is one that encoding/json would
// change, by compacting or escaping it, or refuse.
func appendFast(b []byte, m Message) ([]byte, bool) {
	if !jsonfast.PlainRaw(m.Payload) || !jsonfast.PlainRaw(m.Result) || !jsonfast.PlainRaw(m.Data) ||
		!jsonfast.PlainRaw(m.Value) || m.Keys != nil || m.Counters != nil {
		return b, false
	}
	b = append(b, `{"op":`...)
	b = jsonfast.AppendString(b, string(m.Op))
	if m.ID != "" {
		b = jsonfast.AppendString(append(b, `,"id":`...), m.ID)
	}
	if m.Type != "" {
		b = jsonfast.AppendString(append(b, `,"type":`...), m.Type)
	}
	if len(m.Payload) > 0 {
		b = append(append(b, `,"payload":`...), m.Payload...)
	}
	if m.Attempt != 0 {
		b = strconv.AppendInt(append(b, `,"attempt":`...), int64(m.Attempt), 10)
	}
	if m.Redelivered {
		b = append(b, `,"redelivered":true`...)
	}
	if len(m.Result) > 0 {
		b = append(append(b, `,"result":`...), m.Result...)
	}
	if m.Error != "" {
		b = jsonfast.AppendString(append(b, `,"error":`...), m.Error)
	}
	if m.Permanent {
		b = append(b, `,"permanent":true`...)
	}
	if len(m.Data) > 0 {
		b = append(append(b, `,"data":`...), m.Data...)
	}
	if m.Prefetch != 0 {
		b = strconv.AppendInt(append(b, `,"prefetch":`...), int64(m.Prefetch), 10)
	}
	if m.Req != 0 {
		b = strconv.AppendUint(append(b, `,"req":`...), m.Req, 10)
	}
	if m.Do != "" {
		b = jsonfast.AppendString(append(b, `,"do":`...), m.Do)
	}
	if m.Name != "" {
		b = jsonfast.AppendString(append(b, `,"name":`...), m.Name)
	}
	if m.Key != "" {
		b = jsonfast.AppendString(append(b, `,"key":`...), m.Key)
	}
	if len(m.Value) > 0 {
		b = append(append(b, `,"value":`...), m.Value...)
	}
	if m.Rev != 0 {
		b = strconv.AppendUint(append(b, `,"rev":`...), m.Rev, 10)
	}
	if m.Code != 0 {
		b = strconv.AppendInt(append(b, `,"code":`...), int64(m.Code), 10)
	}
	if m.Cache != 0 {
		b = strconv.AppendInt(append(b, `,"cache":`...), int64(m.Cache), 10)
	}
	if m.Keep {
		b = append(b, `,"keep":true`...)
	}
	if m.Command != "" {
		b = jsonfast.AppendString(append(b, `,"command":`...), m.Command)
	}
	if m.Messages {
		b = append(b, `,"messages":true`...)
	}
	if m.Framed {
		b = append(b, `,"framed":true`...)
	}
	if m.Size != 0 {
		b = strconv.AppendInt(append(b, `,"size":`...), int64(m.Size), 10)
	}
	return append(b, "}\n"...), true
}
