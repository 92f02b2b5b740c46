// A Go HTTP server with in-memory state, for checkpoint tests (Go >= 1.24, whose net.Listen("tcp")
// opens an MPTCP socket when the kernel allows it):
//
//	go_http serve READYFILE     listens on 127.0.0.1 (a free port); READYFILE gets
//	                            "pid=PID\nport=PORT\nproto=N\n" once it serves (tmp+rename)
//	go_http client PORT         an MPTCP client outside the dumped tree: one keep-alive GET
//	                            /state per line read on stdin, each result printed as one line
//
// State: 2 000 items built at start, a hit counter, 300 parked goroutines each holding a digest,
// and a ticker goroutine. GET /state -> JSON {hits, count, checksum, parked, ticking, open,
// accepted, listenerProto, connProto, connMptcp} (and counts a hit); GET /conns -> {open,
// accepted, listenerProto} (no hit); POST /item?k=K&v=V adds an item. `open` is the number of
// connections the server tracks as not yet closed (http.Server's ConnState), which shows whether
// restored connections were let go.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type server struct {
	mu       sync.Mutex
	items    map[string]string
	hits     int
	open     int
	accepted int
	parked   []chan string
	ticks    atomic.Int64
	listener *net.TCPListener
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (s *server) checksum() string {
	keys := make([]string, 0, len(s.items))
	for k := range s.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s;", k, s.items[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// parkedDigest asks every parked goroutine for what it holds: proof that they all run again.
func (s *server) parkedDigest() string {
	h := sha256.New()
	for _, c := range s.parked {
		c <- ""
		io.WriteString(h, <-c)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// protocol is SO_PROTOCOL of a socket: 262 for MPTCP, 6 for TCP.
func protocol(c syscall.Conn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	proto := -1
	raw.Control(func(fd uintptr) {
		if v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PROTOCOL); err == nil {
			proto = v
		}
	})
	return proto
}

type connKey struct{}

func (s *server) state(w http.ResponseWriter, r *http.Request) {
	conn, _ := r.Context().Value(connKey{}).(*net.TCPConn)
	connProto, connMptcp := -1, false
	if conn != nil {
		connProto = protocol(conn)
		connMptcp, _ = conn.MultipathTCP()
	}
	parked := s.parkedDigest()
	s.mu.Lock()
	s.hits++
	out := map[string]any{
		"hits": s.hits, "count": len(s.items), "checksum": s.checksum(), "parked": parked,
		"ticking": s.ticks.Load(), "open": s.open, "accepted": s.accepted,
		"listenerProto": protocol(s.listener), "connProto": connProto, "connMptcp": connMptcp,
	}
	s.mu.Unlock()
	w.Header().Set("content-type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (s *server) conns(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := map[string]int{"open": s.open, "accepted": s.accepted, "listenerProto": protocol(s.listener)}
	s.mu.Unlock()
	json.NewEncoder(w).Encode(out)
}

func (s *server) addItem(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.items[r.URL.Query().Get("k")] = r.URL.Query().Get("v")
	n := len(s.items)
	s.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]int{"count": n})
}

func serve(readyFile string) error {
	s := &server{items: map[string]string{}}
	for i := 0; i < 2000; i++ {
		s.items["item-"+strconv.Itoa(i)] = digest(strconv.Itoa(i))
	}
	for i := 0; i < 300; i++ {
		c := make(chan string)
		held := digest("parked-" + strconv.Itoa(i))
		go func() {
			for range c {
				c <- held
			}
		}()
		s.parked = append(s.parked, c)
	}
	go func() {
		for range time.Tick(10 * time.Millisecond) {
			s.ticks.Add(1)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.listener = ln.(*net.TCPListener)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", s.state)
	mux.HandleFunc("GET /conns", s.conns)
	mux.HandleFunc("POST /item", s.addItem)
	srv := &http.Server{
		Handler:     mux,
		IdleTimeout: time.Hour, // keep-alive clients stay connected, idle, through the dump
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			s.mu.Lock()
			defer s.mu.Unlock()
			switch st {
			case http.StateNew:
				s.open++
				s.accepted++
			case http.StateClosed, http.StateHijacked:
				s.open--
			}
		},
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ready := fmt.Sprintf("pid=%d\nport=%d\nproto=%d\n", os.Getpid(), port, protocol(s.listener))
	if err := os.WriteFile(readyFile+".tmp", []byte(ready), 0o600); err != nil {
		return err
	}
	if err := os.Rename(readyFile+".tmp", readyFile); err != nil {
		return err
	}
	return srv.Serve(ln)
}

// client keeps one MPTCP keep-alive connection to the server and sends GET /state over it for
// every line read on stdin (a closed connection is redialled by the transport).
func client(port string) error {
	d := &net.Dialer{}
	d.SetMultipathTCP(true)
	var lastConn net.Conn
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			lastConn = c
			return c, err
		},
		IdleConnTimeout: time.Hour,
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		resp, err := hc.Get("http://127.0.0.1:" + port + "/state")
		if err != nil {
			fmt.Printf("error %v\n", err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mptcp := false
		if tc, ok := lastConn.(*net.TCPConn); ok {
			mptcp, _ = tc.MultipathTCP()
		}
		fmt.Printf("ok mptcp=%t %s", mptcp, body)
	}
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "serve":
		err = serve(os.Args[2])
	case len(os.Args) == 3 && os.Args[1] == "client":
		err = client(os.Args[2])
	default:
		err = fmt.Errorf("usage: go_http serve READYFILE | go_http client PORT")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
