package pbs

import "testing"

// A finished subjob PBS keeps no record of is shown with its array's
// attributes (comment "Subjob finished", the array's Exit_status): it is
// left out like a purged job, so the element's exit file decides, not the
// array's Exit_status (which a failed sibling set to 1). A subjob with its
// own record keeps its own end.
func TestFinishedSubjobWithoutRecordIsLeftOut(t *testing.T) {
	raw := `{"timestamp":1795723251,"pbs_version":"23.06.06","pbs_server":"pbshost","Jobs":{
 "17[0].pbshost":{"Job_Name":"a","job_state":"X","substate":70,"Exit_status":1,"comment":"Subjob finished","array_id":"17[].pbshost","array_index":0},
 "17[1].pbshost":{"Job_Name":"a","job_state":"X","substate":92,"Exit_status":0,"comment":"Job run at Thu Nov 26 at 20:00 on (pbshost:ncpus=1) and finished","array_id":"17[].pbshost","array_index":1},
 "17[2].pbshost":{"Job_Name":"a","job_state":"R","substate":42,"array_id":"17[].pbshost","array_index":2}}}`
	got, err := ParseQstat([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["17[0].pbshost"]; ok {
		t.Errorf("a subjob shown with its array's attributes was reported: %+v", got["17[0].pbshost"])
	}
	if st, ok := got["17[1].pbshost"]; !ok || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Errorf("a finished subjob with its own record: %+v", st)
	}
	if _, ok := got["17[2].pbshost"]; !ok {
		t.Error("the running subjob is missing")
	}
}
