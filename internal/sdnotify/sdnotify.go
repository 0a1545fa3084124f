// Package sdnotify owns petitiond's conversation with systemd under
// Type=notify: readiness, reload and stop notices, free-form status, and the
// watchdog keep-alive. Outside systemd (no NOTIFY_SOCKET) every call is a
// no-op, so the same binary runs in a terminal, in a container and as a unit.
package sdnotify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Ready tells systemd that startup is done: the unit becomes active and
// dependants start. Send it once the HTTP endpoint and workers are up, and
// again after a reload has finished.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd that a drain has begun, so that the unit shows as
// deactivating while in-flight deliveries finish.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Reloading tells systemd that a SIGHUP reload has begun; follow it with
// Ready when the new configuration is in force (or refused). MONOTONIC_USEC
// is sent too because systemd 253 and later require it with RELOADING=1.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sdnotify: read the monotonic clock: %w", err)
	}
	usec := ts.Nano() / 1000
	return notify(daemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Status sets the one-line status that `systemctl status` shows. Line
// breaks would end the STATUS= field early, so they become spaces.
func Status(s string) error {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	return notify("STATUS=" + s)
}

// Watchdog pings systemd at half the unit's WatchdogSec until ctx ends, and
// returns nil then. It returns nil at once when the watchdog is not enabled
// for this process, and an error when a ping cannot be sent: systemd will
// then restart the service, which is the point.
func Watchdog(ctx context.Context) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("sdnotify: read WATCHDOG_USEC: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		if err := notify(daemon.SdNotifyWatchdog); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		first, _, _ := strings.Cut(state, "\n")
		return fmt.Errorf("sdnotify: send %s: %w", first, err)
	}
	return nil
}
