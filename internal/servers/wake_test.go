package servers

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// woken reports whether ch holds a wake-up, and takes it.
func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestWakeWaiterOldestFirst: a slot released in this process wakes the
// oldest waiting run of its server not woken yet, one per release; a run
// that leaves with a wake-up it did not use passes it on.
func TestWakeWaiterOldestFirst(t *testing.T) {
	t.Parallel()
	m := New(Config{})
	a, leaveA := m.addWaiter("s1")
	b, leaveB := m.addWaiter("s1")
	c, leaveC := m.addWaiter("s1")
	other, leaveOther := m.addWaiter("s2")
	defer leaveOther(false)

	m.wakeWaiter("s1")
	m.wakeWaiter("s1") // a second slot released before a looked: b's
	require.True(t, woken(a))
	require.True(t, woken(b))
	require.False(t, woken(c))
	require.False(t, woken(other), "another server's runs are not woken")

	// a is still first: the next release wakes it again.
	m.wakeWaiter("s1")
	require.False(t, woken(b))
	// a leaves (its wait ended) without using the wake-up: b gets it.
	leaveA(false)
	require.True(t, woken(b))
	require.False(t, woken(c))

	leaveB(false)
	m.wakeWaiter("s1")
	require.True(t, woken(c))
	// c took its wake-up and leaves without the slot: it says so.
	d, leaveD := m.addWaiter("s1")
	defer leaveD(false)
	leaveC(true)
	require.True(t, woken(d))
	require.True(t, m.hasWaiting("s1"), "d")
	require.True(t, m.hasWaiting("s2"))
	m.wakeWaiter("s1") // nobody waits: nothing happens
}
