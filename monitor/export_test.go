package monitor

// FullEvery is how many looks at a run go by between full reads of its
// files (quiet.go).
const FullEvery = fullEvery

// StatTicker returns one tick of the site's stat loop (statLoop, the
// watcher where inotify is off), keeping its marks between ticks.
func (m *Monitor) StatTicker(s *SiteRuntime) func() {
	marks := map[string]fileMark{}
	return func() { m.statOnce(s, marks) }
}
