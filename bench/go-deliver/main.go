// go-deliver: Deliver clients built like a Fabric peer's (Go gRPC with its default
// settings), to measure how korder or any orderer serves them.
//
//	go-deliver -orderer 127.0.0.1:7050 -channel mychannel -msp DIR -mspid Org1MSP read
//	    reads the channel from its oldest block to the block that is newest when it
//	    starts, and reports blocks, bytes and MB/s.
//	go-deliver ... -clients 20 -seconds 30 follow
//	    starts N streams at the next block and reports, for every block, how long after
//	    its first arrival at any stream it arrived at each stream (p50, p99, max).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	cb "github.com/hyperledger/fabric-protos-go-apiv2/common"
	mb "github.com/hyperledger/fabric-protos-go-apiv2/msp"
	ab "github.com/hyperledger/fabric-protos-go-apiv2/orderer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type signer struct {
	creator []byte
	key     *ecdsa.PrivateKey
}

func loadSigner(dir, mspID string) (*signer, error) {
	certs, err := filepath.Glob(filepath.Join(dir, "signcerts", "*"))
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("no certificate in %s/signcerts", dir)
	}
	certPEM, err := os.ReadFile(certs[0])
	if err != nil {
		return nil, err
	}
	keys, err := filepath.Glob(filepath.Join(dir, "keystore", "*"))
	if err != nil || len(keys) == 0 {
		return nil, fmt.Errorf("no key in %s/keystore", dir)
	}
	keyPEM, err := os.ReadFile(keys[0])
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("the key file holds no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		ec, err2 := x509.ParseECPrivateKey(block.Bytes)
		if err2 != nil {
			return nil, fmt.Errorf("key: %v", err)
		}
		parsed = ec
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("the key is not ECDSA")
	}
	creator, err := proto.Marshal(&mb.SerializedIdentity{Mspid: mspID, IdBytes: certPEM})
	if err != nil {
		return nil, err
	}
	return &signer{creator: creator, key: key}, nil
}

// sign returns a DER ECDSA signature of SHA-256(msg) with a low S, as Fabric requires.
func (s *signer) sign(msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return nil, err
	}
	n := elliptic.P256().Params().N
	half := new(big.Int).Rsh(n, 1)
	if sv.Cmp(half) > 0 {
		sv = new(big.Int).Sub(n, sv)
	}
	return asn1.Marshal(struct{ R, S *big.Int }{r, sv})
}

func seekEnvelope(s *signer, channel string, start, stop *ab.SeekPosition) (*cb.Envelope, error) {
	nonce := make([]byte, 24)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ch, err := proto.Marshal(&cb.ChannelHeader{
		Type:      int32(cb.HeaderType_DELIVER_SEEK_INFO),
		ChannelId: channel,
		Timestamp: timestamppb.Now(),
	})
	if err != nil {
		return nil, err
	}
	sh, err := proto.Marshal(&cb.SignatureHeader{Creator: s.creator, Nonce: nonce})
	if err != nil {
		return nil, err
	}
	data, err := proto.Marshal(&ab.SeekInfo{Start: start, Stop: stop, Behavior: ab.SeekInfo_BLOCK_UNTIL_READY})
	if err != nil {
		return nil, err
	}
	payload, err := proto.Marshal(&cb.Payload{
		Header: &cb.Header{ChannelHeader: ch, SignatureHeader: sh},
		Data:   data,
	})
	if err != nil {
		return nil, err
	}
	sig, err := s.sign(payload)
	if err != nil {
		return nil, err
	}
	return &cb.Envelope{Payload: payload, Signature: sig}, nil
}

func specified(n uint64) *ab.SeekPosition {
	return &ab.SeekPosition{Type: &ab.SeekPosition_Specified{Specified: &ab.SeekSpecified{Number: n}}}
}

func oldest() *ab.SeekPosition {
	return &ab.SeekPosition{Type: &ab.SeekPosition_Oldest{Oldest: &ab.SeekOldest{}}}
}

func newest() *ab.SeekPosition {
	return &ab.SeekPosition{Type: &ab.SeekPosition_Newest{Newest: &ab.SeekNewest{}}}
}

func dial(address string) (*grpc.ClientConn, error) {
	// Go gRPC's defaults, as a peer uses them, apart from the message size limit
	// (peers raise it to 100 MB).
	return grpc.NewClient(address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(100<<20)))
}

// height asks for the newest block and returns its number + 1.
func height(ctx context.Context, conn *grpc.ClientConn, s *signer, channel string) (uint64, error) {
	env, err := seekEnvelope(s, channel, newest(), newest())
	if err != nil {
		return 0, err
	}
	stream, err := ab.NewAtomicBroadcastClient(conn).Deliver(ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(env); err != nil {
		return 0, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return 0, err
		}
		if b := resp.GetBlock(); b != nil {
			return b.Header.Number + 1, nil
		}
		return 0, fmt.Errorf("status %v", resp.GetStatus())
	}
}

type readReport struct {
	Blocks  uint64  `json:"blocks"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
}

func read(conn *grpc.ClientConn, s *signer, channel string) (*readReport, error) {
	ctx := context.Background()
	h, err := height(ctx, conn, s, channel)
	if err != nil {
		return nil, err
	}
	env, err := seekEnvelope(s, channel, oldest(), specified(h-1))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	stream, err := ab.NewAtomicBroadcastClient(conn).Deliver(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(env); err != nil {
		return nil, err
	}
	rep := &readReport{}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if b := resp.GetBlock(); b != nil {
			rep.Blocks++
			rep.Bytes += uint64(proto.Size(b))
			continue
		}
		if resp.GetStatus() != cb.Status_SUCCESS {
			return nil, fmt.Errorf("status %v after %d blocks", resp.GetStatus(), rep.Blocks)
		}
		break
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.MBps = float64(rep.Bytes) / 1e6 / rep.Seconds
	return rep, nil
}

type followReport struct {
	Clients  int     `json:"clients"`
	Blocks   int     `json:"blocks"`
	LagP50ms float64 `json:"lag_ms_p50"`
	LagP99ms float64 `json:"lag_ms_p99"`
	LagMaxms float64 `json:"lag_ms_max"`
}

func follow(address string, s *signer, channel string, clients int, seconds int) (*followReport, error) {
	type arrival struct {
		block uint64
		at    time.Time
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	defer cancel()
	conn0, err := dial(address)
	if err != nil {
		return nil, err
	}
	h, err := height(ctx, conn0, s, channel)
	conn0.Close()
	if err != nil {
		return nil, err
	}
	arrivals := make([][]arrival, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			// One connection per client, as separate peers have.
			conn, err := dial(address)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			env, err := seekEnvelope(s, channel, specified(h), specified(^uint64(0)))
			if err != nil {
				errs <- err
				return
			}
			stream, err := ab.NewAtomicBroadcastClient(conn).Deliver(ctx)
			if err != nil {
				errs <- err
				return
			}
			if err := stream.Send(env); err != nil {
				errs <- err
				return
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					return // the run's deadline
				}
				if b := resp.GetBlock(); b != nil {
					arrivals[c] = append(arrivals[c], arrival{b.Header.Number, time.Now()})
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	first := map[uint64]time.Time{}
	seen := map[uint64]int{}
	for _, as := range arrivals {
		for _, a := range as {
			if t, ok := first[a.block]; !ok || a.at.Before(t) {
				first[a.block] = a.at
			}
			seen[a.block]++
		}
	}
	var lags []float64
	blocks := 0
	for _, as := range arrivals {
		for _, a := range as {
			// Only blocks every client received before the deadline.
			if seen[a.block] == clients {
				lags = append(lags, float64(a.at.Sub(first[a.block]).Microseconds())/1000)
			}
		}
	}
	for _, n := range seen {
		if n == clients {
			blocks++
		}
	}
	sort.Float64s(lags)
	pct := func(p float64) float64 {
		if len(lags) == 0 {
			return 0
		}
		i := int(p * float64(len(lags)-1))
		return lags[i]
	}
	return &followReport{Clients: clients, Blocks: blocks, LagP50ms: pct(0.5), LagP99ms: pct(0.99), LagMaxms: pct(1)}, nil
}

func main() {
	address := flag.String("orderer", "127.0.0.1:7050", "orderer address host:port")
	channel := flag.String("channel", "mychannel", "channel id")
	mspDir := flag.String("msp", "", "MSP directory of the client identity (signcerts, keystore)")
	mspID := flag.String("mspid", "Org1MSP", "MSP id of the client identity")
	clients := flag.Int("clients", 20, "follow: Deliver streams, one connection each")
	seconds := flag.Int("seconds", 30, "follow: how long to follow")
	flag.Parse()
	if flag.NArg() != 1 || *mspDir == "" {
		fmt.Fprintln(os.Stderr, "usage: go-deliver -msp DIR [flags] read|follow")
		os.Exit(2)
	}
	s, err := loadSigner(*mspDir, *mspID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-deliver:", err)
		os.Exit(1)
	}
	var out any
	switch flag.Arg(0) {
	case "read":
		conn, err := dial(*address)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-deliver:", err)
			os.Exit(1)
		}
		out, err = read(conn, s, *channel)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-deliver:", err)
			os.Exit(1)
		}
	case "follow":
		out, err = follow(*address, s, *channel, *clients, *seconds)
		if err != nil {
			fmt.Fprintln(os.Stderr, "go-deliver:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "go-deliver: unknown mode", flag.Arg(0))
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
