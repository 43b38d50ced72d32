// Package wire is the agent API's shape (docs/imaging.md, "Agent API"):
// what GET /imaging/task answers and what POST /imaging/report carries,
// shared by the server (imaging) and the agent (agent) so the two sides
// cannot drift apart. It holds types and names only, no logic.
package wire

// Task is GET /imaging/task's answer.
type Task struct {
	Task         string `json:"task"`
	Action       string `json:"action"` // deploy or capture
	Image        string `json:"image"`
	ImagePath    string `json:"image_path"` // under the TFTP root
	Disk         string `json:"disk"`       // "" = the first whole disk large enough
	After        string `json:"after"`      // reboot, poweroff or wait
	Verify       bool   `json:"verify"`
	MinReceivers int    `json:"min_receivers"`
	MaxWaitMS    int64  `json:"max_wait_ms"`
	SettleMS     int64  `json:"settle_ms"`
	UploadURL    string `json:"upload_url,omitempty"` // a capture's PUT URL
	Server       string `json:"server"`               // TFTP host:port for multicast
}

// Report is POST /imaging/report's body.
type Report struct {
	MAC     string             `json:"mac"`
	Token   string             `json:"token"`
	State   string             `json:"state"` // one of the report states below
	Written int64              `json:"written,omitempty"`
	Total   int64              `json:"total,omitempty"`
	Reason  string             `json:"reason,omitempty"`
	Phases  map[string]float64 `json:"phases,omitempty"` // seconds per deploy phase
}

// The states a report may carry.
const (
	StateReceiving = "receiving"
	StateVerifying = "verifying"
	StateDone      = "done"
	StateFailed    = "failed"
)

// The task's after actions.
const (
	AfterReboot   = "reboot"
	AfterPoweroff = "poweroff"
	AfterWait     = "wait"
)
