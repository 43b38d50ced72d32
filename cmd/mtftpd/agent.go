package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mtftpd/mtftpd/agent"
)

const agentAbout = `Runs the imaging agent (docs/imaging.md, "Agent"): reads mtftpd.* from the
kernel command line, brings up the NIC, fetches this machine's task, deploys
or captures, reports, then reboots, powers off or waits as the task says.
As /init of the deploy environment (PID 1) mtftpd runs it by itself.`

func runAgent(args []string) error {
	fs := newFlags("agent")
	cmdline := fs.String("cmdline", "", "kernel command line to read instead of /proc/cmdline")
	initFlag := fs.Bool("init", false, "mount proc, sys, dev, tmp, run and load /etc/mtftpd-modules first (as PID 1)")
	noNet := fs.Bool("no-net", false, "use the network as it is (the MAC must be on the command line)")
	noAfter := fs.Bool("no-after", false, "print the after action instead of doing it")
	_, help, err := parseArgs(fs, args, 0, "no arguments expected")
	if help || err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = agentMain(ctx, *cmdline, *initFlag, !*noNet, !*noAfter)
	if err != nil {
		return errReported // printed by the agent already
	}
	return nil
}

// errReported exits 1 without repeating what the agent printed.
var errReported = errors.New("failed")

// agentMain runs the agent with the machine's Env.
func agentMain(ctx context.Context, cmdline string, init, netUp, after bool) error {
	out := os.Stdout
	fmt.Fprintf(out, agent.Prefix+"mtftpd %s\n", buildVersion())
	if init {
		agent.Init(out)
	}
	if cmdline == "" {
		c, err := agent.ReadCmdline()
		if err != nil {
			fmt.Fprintf(out, agent.Prefix+"%v\n", err)
		}
		cmdline = c
	}
	env := agent.Env{Cmdline: cmdline, Out: out, Version: buildVersion()}
	if netUp {
		env.Net = func(ctx context.Context, mac net.HardwareAddr) (string, net.HardwareAddr, error) {
			return agent.NetUp(ctx, out, "/sys", mac)
		}
	}
	env.After = func(action string) {
		if !after {
			fmt.Fprintf(out, agent.Prefix+"after: %s (not done: --no-after)\n", action)
			return
		}
		if err := agent.Finish(out, action); err != nil {
			fmt.Fprintf(out, agent.Prefix+"%s: %v\n", action, err)
		}
	}
	return agent.Run(ctx, env)
}

// runAsInit is main when mtftpd is PID 1, /init of the deploy
// environment. It never returns: init exiting panics the kernel, so if
// the final reboot fails it waits, saying so, for a person at the console.
func runAsInit() {
	agentMain(context.Background(), "", true, true, true)
	for {
		fmt.Fprintln(os.Stdout, agent.Prefix+"the agent ended without rebooting; halted")
		time.Sleep(time.Hour)
	}
}
