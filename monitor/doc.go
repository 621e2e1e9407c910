// Package monitor decides what happens to runs. It holds the decision table
// (Decide, a pure function), the checkpoint evidence it weighs, the shared
// poller that batches one scheduler query per site per interval for every
// process on the site, and the Engine that polls, decides and acts: it
// writes outcomes and starts retry attempts through an injected Submitter.
package monitor
