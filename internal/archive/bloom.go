package archive

import "math/bits"

// bloomBitsPerState and bloomProbes give a false-positive rate near 1%.
const (
	bloomBitsPerState = 10
	bloomProbes       = 7
	bloomBlockWords   = 8 // 512 bits, a cache line
)

// bloom is a blocked Bloom filter over id hashes: a hash's probes all fall
// in one block, so that a test costs one cache miss.
type bloom []uint64

func newBloom(states int) bloom {
	blocks := max(1, (states*bloomBitsPerState+511)/512)
	return make(bloom, blocks*bloomBlockWords)
}

// block returns the block of h, and 63 bits for its probes, 9 a probe.
func (b bloom) block(h uint64) (bloom, uint64) {
	i, _ := bits.Mul64(h, uint64(len(b)/bloomBlockWords))
	return b[i*bloomBlockWords : (i+1)*bloomBlockWords], h * 0x9e3779b97f4a7c15
}

func (b bloom) add(h uint64) {
	blk, p := b.block(h)
	for range bloomProbes {
		blk[p>>6&7] |= 1 << (p & 63)
		p >>= 9
	}
}

func (b bloom) has(h uint64) bool {
	blk, p := b.block(h)
	for range bloomProbes {
		if blk[p>>6&7]&(1<<(p&63)) == 0 {
			return false
		}
		p >>= 9
	}
	return true
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
