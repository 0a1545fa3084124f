package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/petitiond/petitiond/queue"
)

// enqueueResult is one output line of `petitiond enqueue`.
type enqueueResult struct {
	Line   int    `json:"line"`
	ID     string `json:"id,omitempty"`
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// maxLine bounds one JSON line; a signature is far smaller, so a longer line
// is rejected with a reason instead of stopping the whole run.
const maxLine = 1 << 20

func runEnqueue(ctx context.Context, e *env, args []string) error {
	fs, cfgPath := newFlags(e, "enqueue")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := wantArgs(fs, 0, "no arguments (signatures come on stdin)"); err != nil {
		return err
	}
	st, _, err := connect(ctx, e, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	p := queue.NewProducer(st.rdb)
	defer p.Close()

	out := json.NewEncoder(e.stdout)
	r := bufio.NewReaderSize(e.stdin, 64*1024)
	rejected := 0
	for n := 1; ; n++ {
		line, tooLong, err := readLine(r)
		if err != nil {
			break
		}
		if len(line) == 0 && !tooLong {
			continue
		}
		res := enqueueResult{Line: n}
		var probe struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(line, &probe)
		res.ID = probe.ID
		var outcome queue.Outcome
		var serr error
		if tooLong {
			outcome, serr = queue.Rejected, &queue.RejectError{Reason: "invalid", Err: fmt.Errorf("input: line longer than %d bytes", maxLine)}
		} else {
			outcome, serr = p.SubmitJSON(ctx, line, "cli")
		}
		res.Result = string(outcome)
		var rej *queue.RejectError
		switch {
		case errors.As(serr, &rej):
			res.Result, res.Reason, res.Error = string(queue.Rejected), rej.Reason, rej.Err.Error()
			rejected++
		case serr != nil:
			// Redis failed: stop, so the caller can resubmit from here
			// (resubmitting the earlier lines is harmless).
			res.Result, res.Error = "error", serr.Error()
			_ = out.Encode(res)
			return fmt.Errorf("line %d: %w", n, serr)
		}
		if err := out.Encode(res); err != nil {
			return err
		}
	}
	if rejected > 0 {
		fmt.Fprintf(e.stderr, "petitiond enqueue: %d line(s) rejected\n", rejected)
		return errReported
	}
	return nil
}

// readLine reads one line, trimming the line break; an over-long line is
// consumed and flagged rather than returned.
func readLine(r *bufio.Reader) ([]byte, bool, error) {
	var buf []byte
	tooLong := false
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			if len(buf) > 0 || tooLong {
				return buf, tooLong, nil
			}
			return nil, false, err
		}
		if len(buf)+len(chunk) > maxLine {
			tooLong = true
			buf = nil
		} else if !tooLong {
			buf = append(buf, chunk...)
		}
		if !isPrefix {
			return buf, tooLong, nil
		}
	}
}
