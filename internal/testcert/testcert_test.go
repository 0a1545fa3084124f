package testcert

import (
	"crypto/tls"
	"net"
	"testing"
)

func TestHandshake(t *testing.T) {
	tests := []struct {
		name       string
		hosts      []string
		serverName string
		wantErr    bool
	}{
		{name: "default localhost", serverName: "localhost"},
		{name: "explicit dns name", hosts: []string{"relay.test"}, serverName: "relay.test"},
		{name: "ip address", hosts: []string{"127.0.0.1"}, serverName: "127.0.0.1"},
		{name: "name not covered", hosts: []string{"relay.test"}, serverName: "other.test", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			serverTLS, roots := New(t, tc.hosts...)
			// A real TCP socket rather than net.Pipe: TLS flights interleave
			// writes on both sides, which deadlocks an unbuffered pipe.
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			srvErr := make(chan error, 1)
			go func() {
				c2, err := l.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				defer c2.Close()
				srvErr <- tls.Server(c2, serverTLS).Handshake()
			}()
			c1, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			cli := tls.Client(c1, &tls.Config{RootCAs: roots, ServerName: tc.serverName})
			err = cli.Handshake()
			if tc.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded for a name the certificate does not cover")
				}
				c1.Close()
				<-srvErr
				return
			}
			if err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if err := <-srvErr; err != nil {
				t.Fatalf("server handshake: %v", err)
			}
		})
	}
}
