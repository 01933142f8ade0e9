// A scripted Go program whose context cancellations the node agent must count
// exactly. It waits for a line on stdin (so the agent can attach first), then
// runs -deadlines timeouts that expire (each with one context derived from it,
// as a request made under it has), -deadline-causes timeouts made with
// WithTimeoutCause, -cancels explicit cancel() calls and
// -causes cancellations through WithCancelCause and one parent with -children
// children (cancelled by propagation), then -noops cancel() calls on a context
// already cancelled, each in its own function so
// the agent can name the caller, and prints "done" (with -say-count, then
// "cancelled N": how many contexts it ended, as the agent must count them);
// -rounds runs the script that many times.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// Long enough that the deadline is still ahead when WithTimeout checks it, on
// a loaded machine too: one already past is cancelled inside WithTimeout itself
// (no timer), and the agent rightly names this program as the caller.
const deadline = 25 * time.Millisecond

//go:noinline
func expireDeadlines(n int) {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		request, cancelRequest := context.WithCancel(ctx) // ends with the deadline, by propagation
		<-request.Done()
		cancelRequest()
		cancel() // after the deadline: not a second cancellation
	}
}

// Deadlines that carry a cause (WithTimeoutCause): the timer cancels with it.
//
//go:noinline
func expireDeadlinesWithCause(n int) {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeoutCause(
			context.Background(), deadline, errors.New("scripted deadline"))
		<-ctx.Done()
		cancel()
	}
}

//go:noinline
func cancelExplicitly(n int) {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		<-ctx.Done()
	}
}

//go:noinline
func cancelWithCause(n int) {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errors.New("scripted cause"))
		<-ctx.Done()
	}
}

//go:noinline
func cancelParent(children int) {
	parent, cancel := context.WithCancel(context.Background())
	for i := 0; i < children; i++ {
		context.WithCancel(parent) // cancelled through the parent
	}
	cancel()
}

// Cancellations with n different causes: n call sites as the agent keys them,
// more than its counts map holds when asked.
//
//go:noinline
func cancelWithDistinctCauses(n int) {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(fmt.Errorf("cause %d", i))
		<-ctx.Done()
	}
}

// One cancellation, then n calls of cancel() on the context it already ended
// (what every `defer cancel()` after a finished request does): no-ops.
//
//go:noinline
func cancelAgain(n int) {
	if n == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	<-ctx.Done()
	for i := 0; i < n; i++ {
		cancel()
	}
}

// How many contexts the script ends: each deadline and the context derived
// from it, each deadline with a cause, each cancel, each cause, the parent and
// its children, the one context cancelAgain ends (its no-ops end none), and
// each cancel with a distinct cause.
func cancelledBy(deadlines, deadlineCauses, cancels, causes, children, noops, distinctCauses int) int {
	n := 2*deadlines + deadlineCauses + cancels + causes + 1 + children + distinctCauses
	if noops > 0 {
		n++
	}
	return n
}

func main() {
	deadlines := flag.Int("deadlines", 3, "timeouts that expire")
	deadlineCauses := flag.Int("deadline-causes", 0, "timeouts with a cause that expire")
	cancels := flag.Int("cancels", 4, "explicit cancels")
	causes := flag.Int("causes", 5, "cancels with a cause")
	children := flag.Int("children", 2, "children of one parent, cancelled with it")
	noops := flag.Int("noops", 0, "cancel() calls on an already cancelled context (after one that cancels it)")
	distinctCauses := flag.Int("distinct-causes", 0, "cancels, each with a cause of its own")
	wait := flag.Bool("wait", true, "wait for a line on stdin before starting")
	sayCount := flag.Bool("say-count", false, `print "cancelled N" after "done"`)
	rounds := flag.Int("rounds", 1, "times the script runs (with -wait, each after a line on stdin)")
	flag.Parse()
	fmt.Println("ready")
	stdin := bufio.NewReader(os.Stdin)
	for round := 0; round < *rounds; round++ {
		if *wait {
			stdin.ReadString('\n')
		}
		expireDeadlines(*deadlines)
		expireDeadlinesWithCause(*deadlineCauses)
		cancelExplicitly(*cancels)
		cancelWithCause(*causes)
		cancelParent(*children)
		cancelAgain(*noops)
		cancelWithDistinctCauses(*distinctCauses)
		fmt.Println("done")
		if *sayCount {
			n := cancelledBy(*deadlines, *deadlineCauses, *cancels, *causes, *children, *noops, *distinctCauses)
			fmt.Println("cancelled", n)
		}
	}
	if *wait {
		stdin.ReadString('\n') // stay alive until told to exit
	}
}
