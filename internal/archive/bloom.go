package archive

// bloomBitsPerState and bloomProbes give a false-positive rate near 1%.
const (
	bloomBitsPerState = 10
	bloomProbes       = 7
)

// bloom is a Bloom filter over id hashes.
type bloom []uint64

func newBloom(states int) bloom {
	return make(bloom, max(1, (states*bloomBitsPerState+63)/64))
}

// probes calls fn with each bit of h, double hashing its two halves.
func (b bloom) probes(h uint64, fn func(word int, bit uint64) bool) bool {
	m := uint64(len(b)) * 64
	h1, h2 := h&0xffffffff, h>>32|1
	for i := range uint64(bloomProbes) {
		p := (h1 + i*h2) % m
		if !fn(int(p/64), 1<<(p%64)) {
			return false
		}
	}
	return true
}

func (b bloom) add(h uint64) {
	b.probes(h, func(w int, bit uint64) bool { b[w] |= bit; return true })
}

func (b bloom) has(h uint64) bool {
	return b.probes(h, func(w int, bit uint64) bool { return b[w]&bit != 0 })
}

// hashID is the hash the index and the filter key ids by: FNV-1a, then
// mixed so that its values spread evenly over 64 bits, which lets a
// lookup guess where in a sorted index a hash is.
func hashID(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
