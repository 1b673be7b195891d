package agent

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// TestConvert checks, by reflection, that each conversion carries every
// field of the broker type to the wire field of the same name and JSON
// tag, and that every wire field has a broker field but those the agent
// fills itself. A field added on either side and forgotten here, or in
// convert.go, fails it.
func TestConvert(t *testing.T) {
	t.Parallel()

	t.Run("Event", func(t *testing.T) { checkConversion(t, wireEvent) })
	t.Run("LogLine", func(t *testing.T) { checkConversion(t, wireLogLine, "Dropped") })
	t.Run("PoolInfo", func(t *testing.T) { checkConversion(t, wirePool, "Held", "HeldJobs", "Run", "Wait") })
	t.Run("Worker", func(t *testing.T) { checkConversion(t, wireWorker) })
}

// checkConversion fills a B with a distinct value in every field, converts
// it, and compares field by field. wireOnly names the fields of W that B
// lacks on purpose.
func checkConversion[B, W any](t *testing.T, convert func(B) W, wireOnly ...string) {
	t.Helper()
	var b B
	bv := reflect.ValueOf(&b).Elem()
	for i := range bv.NumField() {
		fill(t, bv.Type().Field(i), bv.Field(i), i)
	}
	w := convert(b)
	wv := reflect.ValueOf(w)
	bt, wt := bv.Type(), wv.Type()

	for i := range bt.NumField() {
		bf := bt.Field(i)
		wf, ok := wt.FieldByName(bf.Name)
		require.True(t, ok, "%s.%s has no field in %s", bt, bf.Name, wt)
		require.Equal(t, wf.Tag.Get("json"), bf.Tag.Get("json"), "JSON tag of %s.%s", bt, bf.Name)
		require.True(t, bf.Type.ConvertibleTo(wf.Type), "%s.%s: %s does not convert to %s", bt, bf.Name, bf.Type, wf.Type)
		want := bv.Field(i).Convert(wf.Type).Interface()
		got := wv.FieldByIndex(wf.Index).Interface()
		require.Equal(t, want, got, "%s.%s is not carried to %s", bt, bf.Name, wt)
	}
	for i := range wt.NumField() {
		wf := wt.Field(i)
		if slices.Contains(wireOnly, wf.Name) {
			require.True(t, wv.Field(i).IsZero(), "%s.%s is the agent's to fill", wt, wf.Name)
			continue
		}
		_, ok := bt.FieldByName(wf.Name)
		require.True(t, ok, "%s.%s has no field in %s", wt, wf.Name, bt)
	}
}

// fill sets v, field i of a struct, to a value no other field has.
func fill(t *testing.T, f reflect.StructField, v reflect.Value, i int) {
	t.Helper()
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2024, 5, 6, 7, 8, 9, i, time.UTC)))
	case v.Type() == reflect.TypeFor[json.RawMessage]():
		v.SetBytes(fmt.Appendf(nil, `{"field":%d}`, i))
	case v.Kind() == reflect.String:
		v.SetString(fmt.Sprintf("%s-%d", f.Name, i))
	case v.CanInt():
		v.SetInt(int64(1000 + i))
	case v.Kind() == reflect.Bool:
		v.SetBool(true)
	case v.Type() == reflect.TypeFor[[]string]():
		v.Set(reflect.ValueOf([]string{f.Name, fmt.Sprint(i)}))
	case v.Type() == reflect.TypeFor[map[string]float64]():
		v.Set(reflect.ValueOf(map[string]float64{f.Name: float64(i)}))
	default:
		t.Fatalf("fill: no value for %s of type %s; teach fill one", f.Name, f.Type)
	}
}

// The wire records keep their meaning: a converted value encodes as the
// record did when the broker handed out wire types.
func TestConvert_JSON(t *testing.T) {
	t.Parallel()

	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	e := wireEvent(broker.Event{Time: at, Kind: broker.EventWorkerExit, Host: "h", Pool: "p", PID: 7, Reason: broker.ReasonStop, Uptime: broker.Duration(1500 * time.Millisecond)})
	data, err := json.Marshal(e)
	require.NoError(t, err)
	require.JSONEq(t, `{"time":"2024-05-06T07:08:09Z","kind":"exit","host":"h","pool":"p","pid":7,"reason":"stop","uptime":"1.5s"}`, string(data))
	// A broker record encodes as the wire's does: durations as strings.
	direct, err := json.Marshal(broker.Event{Time: at, Kind: broker.EventWorkerExit, Host: "h", Pool: "p", PID: 7, Reason: broker.ReasonStop, Uptime: broker.Duration(1500 * time.Millisecond)})
	require.NoError(t, err)
	require.JSONEq(t, string(data), string(direct))
	var event broker.Event
	require.NoError(t, json.Unmarshal(direct, &event))
	require.Equal(t, broker.Duration(1500*time.Millisecond), event.Uptime)

	w := wireWorker(broker.Worker{Host: "h", Pool: "p", State: broker.WorkerBusy, CPU: broker.Duration(2 * time.Second), Version: 1})
	data, err = json.Marshal(w)
	require.NoError(t, err)
	require.JSONEq(t, `{"host":"h","pool":"p","index":0,"pid":0,"state":"busy","rss":0,"jobs_done":0,"restarts":0,"cpu":"2s","version":1}`, string(data))

	var back wire.WorkerInfo
	require.NoError(t, json.Unmarshal(data, &back))
	require.Equal(t, w, back)
}
