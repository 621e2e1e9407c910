// Command tether runs analysis Tasks on HPC batch systems for workflow
// engines such as Airflow. See README.md.
package main

import "os"

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}
