// Package siteconfigs holds the example and reference site files. The
// default local site is embedded in the tether binary from here.
package siteconfigs

import _ "embed"

// DefaultLocal is the embedded default site (local.toml).
//
//go:embed local.toml
var DefaultLocal []byte

// DefaultLocalName is the name the default site is known by.
const DefaultLocalName = "local"
