// Command pbsemu is the OpenPBS emulator used by tether's tests. Linked or
// copied as qsub, qstat, qdel, qrls, qselect or pbsnodes it behaves as that
// command; "pbsemu start|stop|server" runs the emulated server. See
// internal/pbsemu/README.md.
package main

import (
	"os"

	"github.com/tether-hpc/tether/internal/pbsemu"
)

func main() {
	cwd, _ := os.Getwd()
	os.Exit(pbsemu.Main(os.Args, pbsemu.IO{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Env: os.Environ(), Cwd: cwd,
	}))
}
