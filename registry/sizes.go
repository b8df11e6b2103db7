package registry

import "unsafe"

const (
	unsafeSizeofHistogram = unsafe.Sizeof(Histogram{})
	unsafeSizeofShard     = unsafe.Sizeof(hshard{})
	unsafeSizeofBuckets   = unsafe.Sizeof(buckets{})
)
