//go:build !linux

package rundir

// NetworkFS cannot tell filesystems apart off Linux: "" (local).
func NetworkFS(dir string) string { return "" }
