package pbsemu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// protoVersion is the version of the client/server request format.
const protoVersion = 1

// SubmitRequest is what qsub sends: the job as the client parsed it from
// options and #PBS directives. The server validates it like pbs_server.
type SubmitRequest struct {
	User  string   `json:"user"`
	UID   int      `json:"uid"`
	GID   int      `json:"gid"`
	Home  string   `json:"home"`
	Shell string   `json:"shell"`
	Cwd   string   `json:"cwd"`
	Name  string   `json:"name"`
	Queue string   `json:"queue,omitempty"`
	Res   []KeyVal `json:"res,omitempty"`

	Account    string   `json:"account,omitempty"`
	Project    string   `json:"project,omitempty"`
	OutputPath string   `json:"output_path,omitempty"`
	ErrorPath  string   `json:"error_path,omitempty"`
	Join       string   `json:"join,omitempty"`
	Keep       string   `json:"keep,omitempty"`
	MailPoints string   `json:"mail_points,omitempty"`
	MailUsers  string   `json:"mail_users,omitempty"`
	Rerunable  *bool    `json:"rerunable,omitempty"`
	Hold       bool     `json:"hold,omitempty"`
	Priority   int      `json:"priority,omitempty"`
	Checkpoint string   `json:"checkpoint,omitempty"`
	ShellPath  string   `json:"shell_path,omitempty"`
	Umask      string   `json:"umask,omitempty"`
	Depend     string   `json:"depend,omitempty"`
	ExecTime   int64    `json:"exec_time,omitempty"`
	VarList    []KeyVal `json:"var_list"`
	SubmitArgs string   `json:"submit_args"`
	Script     string   `json:"script,omitempty"`
	Executable string   `json:"executable,omitempty"`
	Args       []string `json:"args,omitempty"`
	// QdelExit is PBSEMU_QDEL_EXIT_STATUS of qsub's environment: the
	// qdel_exit_status of this job (not a PBS attribute).
	QdelExit string `json:"qdel_exit,omitempty"`
	// Array is -J's X-Y[:Z] (array_indices_submitted), MaxRun its %N or
	// -W max_run_subjobs.
	Array  string `json:"array,omitempty"`
	MaxRun *int   `json:"max_run,omitempty"`
}

// Request is one client request.
type Request struct {
	V       int            `json:"v"`
	Op      string         `json:"op"`
	IDs     []string       `json:"ids,omitempty"`
	History bool           `json:"history,omitempty"`
	Force   bool           `json:"force,omitempty"`
	DelHist bool           `json:"del_hist,omitempty"`
	User    string         `json:"user,omitempty"`
	On      bool           `json:"on,omitempty"`
	Subjobs bool           `json:"subjobs,omitempty"`     // qstat -t
	Arrays  bool           `json:"arrays_only,omitempty"` // qstat -J without ids
	Submit  *SubmitRequest `json:"submit,omitempty"`
}

// StatEntry is the status of one job, or the error for one requested id.
type StatEntry struct {
	ID    string `json:"id"`
	Errno int    `json:"errno,omitempty"`
	Attrs []Attr `json:"attrs,omitempty"`
}

// Response is the server's answer.
type Response struct {
	V       int         `json:"v"`
	Errno   int         `json:"errno,omitempty"`
	Msg     string      `json:"msg,omitempty"`
	ID      string      `json:"id,omitempty"`
	Entries []StatEntry `json:"entries,omitempty"`
	Server  string      `json:"server,omitempty"`
	Attrs   []Attr      `json:"attrs,omitempty"`
	Queues  []StatEntry `json:"queues,omitempty"`
}

// errUnreachable means the server could not be contacted.
var errUnreachable = errors.New("pbsemu server unreachable")

// call sends one request to the instance's server.
func (in Instance) call(req Request) (Response, error) {
	var resp Response
	req.V = protoVersion
	conn, err := net.DialTimeout("unix", in.SocketPath(), 5*time.Second)
	if err != nil {
		return resp, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return resp, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return resp, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, fmt.Errorf("bad response from pbsemu server: %w", err)
	}
	return resp, nil
}
