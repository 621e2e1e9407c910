// Package schema owns tether's file formats: the task spec and the site
// config (TOML, strict), the status events a Task appends to status.jsonl,
// the run record (run.json), the wrapper's started and exitcode files, and
// the outcome (outcome.json and the CLI's JSON line).
//
// Loading is strict: unknown keys, wrong types, missing required fields and
// impossible values are reported as *Error values that name the file, the
// line and the dotted key, collected into an Errors list so that a user sees
// every problem in one go. Every persisted JSON format carries a "v" field.
package schema
