module tsdump.test/go_http

// 1.24: the first Go whose net.Listen("tcp") opens an MPTCP socket by default (GODEBUG
// multipathtcp=1 for main modules at this version or later).
go 1.24
