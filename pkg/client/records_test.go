package client_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// The public records are the wire records under their own names: the same
// JSON both ways, every field. fill sets every field of the one, and
// decoding rejects a field the other lacks, so a field added to either
// side alone fails here.
func TestRecords_SameJSONAsWire(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		public, wire any // pointers to zero values
	}{
		{"Job", &jobFields{}, &wire.Job{}},
		{"Attempt", &client.Attempt{}, &wire.Attempt{}},
		{"Host", &hostFields{}, &wire.Heartbeat{}},
		{"HostPool", &client.HostPool{}, &wire.PoolInfo{}},
		{"Worker", &client.Worker{}, &wire.WorkerInfo{}},
		{"Event", &eventFields{}, &wire.Event{}},
		{"LogLine", &logLineFields{}, &wire.LogLine{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip(t, tc.wire, reflect.New(reflect.TypeOf(tc.public).Elem()).Interface())
			roundTrip(t, tc.public, reflect.New(reflect.TypeOf(tc.wire).Elem()).Interface())
		})
	}
}

// jobFields is client.Job without its HeldBy, which is not stored: a
// Client adds it from the hosts' heartbeats.
type jobFields client.Job

func (j *jobFields) MarshalJSON() ([]byte, error) {
	return withoutKey((*client.Job)(j), "held_by")
}

func (j *jobFields) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode((*client.Job)(j))
}

// withoutKey encodes v without its key.
func withoutKey(v any, key string) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	delete(m, key)
	return json.Marshal(m)
}

// hostFields is client.Host without its Lost, which no host sends: a
// Client sets it on the hosts it lists lost.
type hostFields client.Host

func (h *hostFields) MarshalJSON() ([]byte, error) {
	return withoutKey((*client.Host)(h), "lost")
}

func (h *hostFields) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode((*client.Host)(h))
}

// eventFields is client.Event without its Scope, which workerd does not
// send: the conductor's client adds it.
type eventFields client.Event

func (e *eventFields) MarshalJSON() ([]byte, error) {
	return withoutKey((*client.Event)(e), "scope")
}

func (e *eventFields) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode((*client.Event)(e))
}

// logLineFields is client.LogLine without its Error, which no host sends
// in a line: the object that stands for a host whose tail is missing has
// it.
type logLineFields client.LogLine

func (l *logLineFields) MarshalJSON() ([]byte, error) {
	return withoutKey((*client.LogLine)(l), "error")
}

func (l *logLineFields) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode((*client.LogLine)(l))
}

// roundTrip fills from, encodes it, decodes that into to (which must know
// every field) and checks that to encodes the same.
func roundTrip(t *testing.T, from, to any) {
	t.Helper()
	fill(reflect.ValueOf(from).Elem(), "v")
	data, err := json.Marshal(from)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(to), "%T decoded into %T", from, to)
	back, err := json.Marshal(to)
	require.NoError(t, err)
	require.JSONEq(t, string(data), string(back), "%T through %T", from, to)
}

// fill sets every field of v, recursively, to a value that is not zero
// and differs by the field's path.
func fill(v reflect.Value, path string) {
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2026, 11, 23, 10, 0, len(path), 0, time.UTC)))
		return
	case v.Type() == reflect.TypeFor[json.RawMessage]():
		v.SetBytes([]byte(`{"at":` + strconv.Quote(path) + `}`))
		return
	case v.Type() == reflect.TypeFor[client.Duration]() || v.Type() == reflect.TypeFor[wire.Duration]():
		v.SetInt(int64(len(path)) * int64(time.Millisecond))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.String:
		v.SetString(path)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(len(path)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Float64:
		v.SetFloat(float64(len(path)) + 0.5)
	case reflect.Uint64:
		v.SetUint(uint64(len(path)))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), path)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := range 2 {
			val := reflect.New(v.Type().Elem()).Elem()
			fill(val, path+"["+strconv.Itoa(i)+"]")
			m.SetMapIndex(reflect.ValueOf(path+strconv.Itoa(i)).Convert(v.Type().Key()), val)
		}
		v.Set(m)
	default:
		panic("fill: no value for " + v.Type().String() + " at " + path)
	}
}

// The public constants are the values the conductor and workerd write.
func TestRecords_ConstantsAsWire(t *testing.T) {
	t.Parallel()
	require.Equal(t, wire.HistogramBounds, client.HistogramBounds)
	require.Equal(t, wire.MaxLogTail, client.MaxLogTail)
	for _, tc := range []struct{ public, wire string }{
		{string(client.StatusQueued), string(wire.StatusQueued)},
		{string(client.StatusRunning), string(wire.StatusRunning)},
		{string(client.StatusSucceeded), string(wire.StatusSucceeded)},
		{string(client.StatusFailed), string(wire.StatusFailed)},
		{string(client.StatusDead), string(wire.StatusDead)},
		{string(client.StatusCancelled), string(wire.StatusCancelled)},
		{string(client.PriorityHigh), string(wire.PriorityHigh)},
		{string(client.PriorityNormal), string(wire.PriorityNormal)},
		{string(client.PriorityLow), string(wire.PriorityLow)},
		{string(client.OpDrain), wire.CommandDrain},
		{string(client.OpResume), wire.CommandResume},
		{string(client.OpRecycle), wire.CommandRecycle},
		{string(client.OpRestart), wire.CommandRestart},
		{string(client.OpResize), wire.CommandResize},
		{string(client.OpUpgrade), wire.CommandUpgrade},
		{string(client.OpShutdown), wire.CommandShutdown},
		{client.AllPools, wire.AllPools},
		{client.EventWorkerStart, wire.EventWorkerStart},
		{client.EventWorkerReady, wire.EventWorkerReady},
		{client.EventWorkerExit, wire.EventWorkerExit},
		{client.EventWorkerMessage, wire.EventWorkerMessage},
		{client.EventPoolFailed, wire.EventPoolFailed},
		{client.EventPoolRecovered, wire.EventPoolRecovered},
		{client.EventPoolDrained, wire.EventPoolDrained},
		{client.EventPoolResumed, wire.EventPoolResumed},
		{client.EventPoolResized, wire.EventPoolResized},
		{client.EventPoolRecycled, wire.EventPoolRecycled},
		{client.EventPoolUpgraded, wire.EventPoolUpgraded},
		{client.EventPoolRollback, wire.EventPoolRollback},
		{client.EventPoolStopped, wire.EventPoolStopped},
		{client.ReasonStart, wire.ReasonStart},
		{client.ReasonRestart, wire.ReasonRestart},
		{client.ReasonFailure, wire.ReasonFailure},
		{client.ReasonRecycle, wire.ReasonRecycle},
		{client.ReasonUpgrade, wire.ReasonUpgrade},
		{client.ReasonResize, wire.ReasonResize},
		{client.ReasonStop, wire.ReasonStop},
	} {
		require.Equal(t, tc.wire, tc.public)
	}
	for _, s := range []client.Status{client.StatusQueued, client.StatusRunning, client.StatusSucceeded, client.StatusFailed, client.StatusDead, client.StatusCancelled} {
		require.Equal(t, wire.Status(s).Final(), s.Final(), s)
	}
	for _, in := range []string{"", "high", "normal", "low", "urgent"} {
		p, err := client.ParsePriority(in)
		wp, werr := wire.ParsePriority(in)
		require.Equal(t, string(wp), string(p), in)
		require.Equal(t, werr, err, in)
	}
}
