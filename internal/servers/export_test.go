package servers

// AddWaiter is addWaiter, for the tests of package servers_test: a run
// waiting for a slot of server, without looking.
func (m *Manager) AddWaiter(server string) (<-chan struct{}, func(passOn bool)) {
	return m.addWaiter(server)
}
