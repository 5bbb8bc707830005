#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (run from anywhere; idempotent).

The SIP messages are the shapes the core's tests send (sipd/core/src/b2bua/tests.rs) plus
torture messages in the spirit of RFC 4475, written here: folded and compact headers,
escapes, odd whitespace, conflicting or missing Content-Length, NULs, huge numbers.
"""
import json, os, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

SDP_A = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
         "m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
SDP_ICE = ("v=0\r\no=- 3 3 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
           "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n"
           "m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
           "a=rtcp:20001 IN IP4 10.0.0.1\r\na=candidate:1 1 UDP 2130706431 10.0.0.1 20000 typ host\r\n"
           "a=sendrecv\r\nm=video 0 RTP/AVP 96\r\n")
SDP_V6 = ("v=0\r\no=- 4 4 IN IP6 fd00::1\r\ns=-\r\nt=0 0\r\n"
          "m=audio 30000 RTP/AVP 0\r\nc=IN IP6 fd00::1\r\na=rtcp:30001\r\n")
SDP_BAD = ["v=0\r\nm=audio 99999 RTP/AVP 0\r\n", "v=0\r\nc=IN IP4 224.0.0.1\r\nm=audio 1 RTP/AVP 0\r\n",
           "v=0\nm=audio 20000 RTP/AVP\nc=IN IP4 300.1.1.1\n", "m=audio 20000/2 RTP/AVP 0\r\n",
           "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 0 RTP/AVP 0\r\na=rtcp:abc\r\n", ""]

def length(msg):
    head, _, body = msg.partition("\r\n\r\n")
    lines = [l for l in head.split("\r\n") if not l.lower().startswith("content-length")]
    return "\r\n".join(lines) + "\r\nContent-Length: %d\r\n\r\n%s" % (len(body.encode()), body)

def invite(call_id="call-1", extra="", sdp=True, uri="sip:4420555@10.0.0.2", via_host="10.0.0.1:5060"):
    return length(
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK-{call_id};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: \"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-{call_id}\r\n"
        f"To: <sip:4420555@10.0.0.2>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:1555000@10.0.0.1:5060>\r\n{extra}Content-Type: application/sdp\r\n\r\n"
        + (SDP_A if sdp else ""))

def req(method, call_id="call-1", to_tag="", cseq=2, extra=""):
    t = f";tag={to_tag}" if to_tag else ""
    return length(
        f"{method} sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{method.lower()}{cseq}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1555000@10.0.0.1>;tag=ftag-{call_id}\r\n"
        f"To: <sip:4420555@10.0.0.2>{t}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}\r\n")

AUTH = ('Digest username="digest", realm="sbc", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", '
        'uri="sip:4420555@10.0.0.2", response="' + "0" * 64 + '", algorithm=SHA-256, qop=auth, '
        'nc=00000001, cnonce="0a4f113b", opaque=""')
AUTH_MD5 = ('Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
            'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
            'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"')

RESP = length("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-x\r\n"
              "From: <sip:a@10.0.0.2>;tag=1\r\nTo: <sip:b@10.0.1.1>;tag=vtag\r\nCall-ID: up-1\r\n"
              "CSeq: 1 INVITE\r\nContact: <sip:vendor@10.0.1.1:5060>\r\n\r\n")

TORTURE = {
    "wsinv": length("INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
                    "TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
                    "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n"
                    "MaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\nCSeq: 0009\r\n  INVITE\r\n"
                    "Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw\r\n"
                    "s :\r\nNewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
                    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
                    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
                    "m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n"
                    "  secondparam ; q = 0.33\r\nContent-Type: application/sdp\r\n\r\n" + SDP_A),
    "compact": length("INVITE sip:4420555@10.0.0.2 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-c1\r\n"
                      "f: <sip:1@10.0.0.1>;tag=a\r\nt: <sip:4420555@10.0.0.2>\r\ni: compact-1\r\n"
                      "CSeq: 1 INVITE\r\nm: <sip:1@10.0.0.1>\r\nc: application/sdp\r\n\r\n" + SDP_A),
    "esc01": length("INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n"
                    "To: sip:%75se%72@example.com\r\nFrom: <sip:I%20have%20spaces@example.net>;tag=938\r\n"
                    "Max-Forwards: 87\r\ni: esc01.239409asdfakjkn23onasd0-3234\r\nCSeq: 234234 INVITE\r\n"
                    "Via: SIP/2.0/UDP host5.example.net;rport;branch=z9hG4bKkdjuw\r\n"
                    "C: application/sdp\r\nContact:\r\n  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\r\n\r\n" + SDP_A),
    "escnull": "REGISTER sip:example.com SIP/2.0\r\nTo: sip:null-%00-null@example.com\r\n"
               "From: sip:null-%00-null@example.com;tag=839923423\r\nMax-Forwards: 70\r\n"
               "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\r\nCSeq: 14398234 REGISTER\r\n"
               "Via: SIP/2.0/UDP host5.example.com;rport;branch=z9hG4bKkdjuw\r\nContent-Length: 0\r\n\r\n",
    "lwsdisp": req("OPTIONS", "lwsdisp", extra="Accept: application/sdp\r\n"),
    "longreq": invite("long-" + "x" * 3000, extra="X-Long: " + "y" * 4000 + "\r\n"),
    "dblreq": req("REGISTER", "dbl") + req("INVITE", "dbl2"),
    "semiuri": invite("semi", uri="sip:user;par=u%40example.net@example.com"),
    "transports": invite("tp", via_host="[2001:db8::9:1]:5060;received=[2001:db8::9:255]"),
    "mpart": length("MESSAGE sip:kumiko@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-mp\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:kumiko@example.org>\r\nCall-ID: mp\r\n"
                    "CSeq: 1 MESSAGE\r\nContent-Type: multipart/mixed;boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"),
    "unreason": length("SIP/2.0 200 = 2**3 * 5**2 \xd0\xbd\xd0\xbe \xd1\x81\xd1\x82\xd0\xbe \r\n"
                       "Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-u\r\nCall-ID: unreason\r\nCSeq: 35 INVITE\r\n"
                       "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n\r\n"),
    "noreason": "SIP/2.0 100 \r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-n\r\nCall-ID: nr\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nContent-Length: 0\r\n\r\n",
    # Invalid ones.
    "badinv01": "INVITE sip:user@example.com SIP/2.0\r\nTo: sip:j.user@example.com\r\nFrom: sip:caller@example.net;tag=134161461246\r\nMax-Forwards: 7\r\nCall-ID: badinv01.0ha0isndaksdjasdf3234nas\r\nCSeq: 8 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.15;;,;,,\r\nContact: \"Joe\" <sip:joe@example.org>;;;;\r\nContent-Length: 152\r\nContent-Type: application/sdp\r\n\r\n" + SDP_A,
    "clerr": "INVITE sip:user@example.com SIP/2.0\r\nMax-Forwards: 80\r\nTo: sip:j.user@example.com\r\nFrom: sip:caller@example.net;tag=93942939o2\r\nContact: <sip:caller@hungry.example.net>\r\nCall-ID: clerr.0ha0isndaksdjweiafasdk3\r\nCSeq: 8 INVITE\r\nVia: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\r\nContent-Type: application/sdp\r\nContent-Length: 9999\r\n\r\n" + SDP_A,
    "ncl": "INVITE sip:user@example.com SIP/2.0\r\nMax-Forwards: 254\r\nTo: sip:j.user@example.com\r\nFrom: sip:caller@example.net;tag=32394234\r\nCall-ID: ncl.0ha0isndaksdj2193423r542w35\r\nCSeq: 0 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\r\nContact: <sip:caller@example53.example.net>\r\nContent-Type: application/sdp\r\nContent-Length: -999\r\n\r\n" + SDP_A,
    "twocl": "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: twocl\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\nContent-Length: 10\r\n\r\n0123456789",
    "scalar02": "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP host129.example.com;branch=z9hG4bKzzxdiwo34sw;rport\r\nTo: <sip:user@example.com>\r\nFrom: <sip:other@example.net>;tag=3829098\r\nCall-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\r\nCSeq: 139122385607296 REGISTER\r\nMax-Forwards: 255\r\nExpires: 1<repeat count=100>0\r\nContact: <sip:user@host129.example.com>;expires=280297596632815\r\nContent-Length: 0\r\n\r\n",
    "scalarlg": "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\r\nTo: <sip:user@example.com>\r\nFrom: <sip:other@example.net>;tag=2easdjfejw\r\nCSeq: 9292394834772304023312 OPTIONS\r\nCall-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r\r\nRetry-After: 949302838503028349304023988\r\nWarning: 1812 overture \"In Progress\"\r\nContent-Length: 0\r\n\r\n",
    "quotbal": "INVITE sip:user@example.com SIP/2.0\r\nTo: \"Mr. J. User <sip:j.user@example.com>\r\nFrom: sip:caller@example.net;tag=93334\r\nMax-Forwards: 10\r\nCall-ID: quotbal.aksdj\r\nContact: <sip:caller@host59.example.net>\r\nCSeq: 8 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n",
    "ltgtruri": "INVITE <sip:user@example.com> SIP/2.0\r\nTo: sip:user@example.com\r\nFrom: sip:caller@example.net;tag=39291\r\nMax-Forwards: 23\r\nCall-ID: ltgtruri.1@192.0.2.5\r\nCSeq: 1 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.5\r\nContent-Length: 0\r\n\r\n",
    "badaspec": "OPTIONS sip:user@example.org SIP/2.0\r\nVia: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\r\nMax-Forwards: 70\r\nFrom: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423\r\nTo: \"Watson, Thomas\" < sip:t.watson@example.org >\r\nCall-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\r\nAccept: application/sdp\r\nCSeq: 3923239 OPTIONS\r\nl: 0\r\n\r\n",
    "badvers": "OPTIONS sip:t.watson@example.org SIP/7.0\r\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\nMax-Forwards: 70\r\nFrom: A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\r\nTo: T. Watson <sip:t.watson@example.org>\r\nCall-ID: badvers.31417@c.example.com\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
    "mismatch": "OPTIONS sip:user@example.com SIP/2.0\r\nTo: sip:j.user@example.com\r\nFrom: sip:caller@example.net;tag=34525\r\nMax-Forwards: 6\r\nCall-ID: mismatch01.dj0234sxdfl3\r\nCSeq: 8 INVITE\r\nVia: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\nl: 0\r\n\r\n",
    "nul": "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-n\r\nFrom: <sip:a\x00@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: nul\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    "crlfs": "\r\n" * 8 + req("OPTIONS", "crlf"),
    "noend": "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nCall-ID: x",
    "novia": "INVITE sip:a@b SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: novia\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    "lf-only": req("OPTIONS", "lf").replace("\r\n", "\n"),
    "badauth": invite("ba", extra="Authorization: Digest x\r\n"),
    "cancel": req("CANCEL", "call-1", cseq=1),
    "ack": req("ACK", "call-1", to_tag="atag", cseq=1),
    "bye": req("BYE", "call-1", to_tag="atag"),
    "update": length(req("UPDATE", "call-1", to_tag="atag", extra="Content-Type: application/sdp\r\n")[:-2].rsplit("Content-Length", 1)[0] + "\r\n" + SDP_A),
    "info": req("INFO", "call-1", to_tag="atag"),
    "register": req("REGISTER", "reg", extra="Contact: <sip:1@10.0.0.1>\r\nExpires: 3600\r\nUser-Agent: friendly-scanner\r\n"),
    "ringing": RESP,
}

def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def main():
    msgs = dict(TORTURE)
    msgs["invite"] = invite()
    msgs["invite-nosdp"] = invite("n", sdp=False)
    msgs["invite-auth"] = invite("au", extra=f"Authorization: {AUTH}\r\n")
    msgs["invite-ice"] = invite("ice").replace(SDP_A, SDP_ICE).replace(
        "Content-Length: %d" % len(SDP_A), "Content-Length: %d" % len(SDP_ICE))
    for n, m in msgs.items():
        write("sip_parse", n, m)

    # Framing: limit (u16), two read sizes, then the stream.
    for n, m in [("one", msgs["invite"]), ("two", msgs["dblreq"]), ("ping", "\r\n\r\n" + msgs["bye"] + "\r\n"),
                 ("clerr", msgs["clerr"]), ("twocl", msgs["twocl"]), ("ncl", msgs["ncl"]),
                 ("nocl", "OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"), ("long", msgs["longreq"])]:
        for lim, r in [(16384, (255, 7)), (300, (1, 1))]:
            write("tcp_framing", f"{n}-{lim}", struct.pack("<HBB", lim, *r) + m.encode("utf-8", "surrogateescape"))

    for i, a in enumerate([AUTH, AUTH_MD5, "Digest x", 'Digest username="a", username="b"',
                           'Digest realm="sbc", nonce="", uri="sip:a@b", response="zz", algorithm=MD5-sess',
                           'Digest username="a\\"b", realm=sbc,nonce=n,uri=u,response=' + "a" * 32,
                           "Basic dXNlcjpwYXNz", "Digest " + ",".join(["a=b"] * 50), 'Digest username="' + "x" * 2000 + '"']):
        write("digest_authorization", f"auth{i}", a)

    # SDP: flags v6, origin, remove_ice; nports; 4 ports (LE); then the body.
    for i, s in enumerate([SDP_A, SDP_ICE, SDP_V6] + SDP_BAD):
        for flags in [(0, 0, 0, 1), (1, 1, 1, 4), (0, 1, 1, 0)]:
            write("sdp_rewrite", f"sdp{i}-{''.join(map(str, flags))}",
                  bytes(flags) + struct.pack("<4H", 40000, 40002, 0, 65535) + s.encode())

    ng = [b'd7:command4:pinge', b'd7:command5:offer3:sdp%d:%s7:call-id4:c-0015:from-tag2:ft5:flagsl13:strict-sourcee7:replacel6:origine3:ICE6:remove9:direction1:le' % (len(SDP_A), SDP_A.encode()),
          b'd7:command6:answer3:sdp%d:%s7:call-id4:c-0015:from-tag2:ft6:to-tag2:tte' % (len(SDP_V6), SDP_V6.encode()),
          b'd7:command6:delete7:call-id4:c-0015:from-tag2:fte', b'd7:command5:querye', b'd6:result2:oke',
          b'd6:result5:error12:error-reason3:badee', b'i-0e', b'le', b'li1ei2ei3ee', b'd1:ad1:bd1:cleeee',
          b'4:spam', b'i9223372036854775807e', b'd3:zzz1:a3:aaa1:be', b'd1:a1:a1:a1:be', b'i03e', b'99999999999:x']
    for i, n in enumerate(ng):
        write("ng_decode", f"bencode{i}", n)
        write("ng_decode", f"dgram{i}", b"5323_1 " + n)

    kinds = {
        0: [{"name": "carrier-a", "enabled": True, "balance": "10.50", "tariff": "t1", "cps_limit": 10,
             "max_sessions": 5, "sip": {"username": "carrier-a", "password": "Correct-horse-9"}},
            {"name": "x", "sip": {"username": "taken", "ha1_md5": "0" * 32, "realm": "sbc"}},
            {"name": "", "balance": "-1e9"}],
        1: [{"name": "vendor1", "destination": "10.0.1.1:5060", "transport": "tcp", "cld_prefixes": ["44", "1"],
             "max_channels": 10, "priority": 1}, {"name": "v6", "destination": "[2001:db8::1]:70000"}],
        2: [{"name": "r1", "remote": "10.0.0.0/24", "ip_only": True, "cli": "^1555", "cld": "44*"},
            {"name": "r2", "cld": "/(a+)+$/"}],
        3: [{"name": "t1", "rate": "0.0125", "increment_secs": 60, "first_secs": 30},
            {"name": "t2", "rate": "-0.5"}],
        4: [{"amount": "10.00", "note": "top-up"}, {"amount": "1e400"}],
        5: [{"addr": "203.0.113.9", "duration_secs": 600, "reason": "scanner"}, {"addr": "::1/0"}],
        6: [{"service": "sip", "cidr": "10.0.0.0/8"}],
        7: [{"cidr": "0.0.0.0/0"}],
        8: [{"username": "admin", "password": "pw", "totp": "123456"}],
        9: [{"current": "a", "new": "b" * 100}],
        10: [{"username": "ops", "role": "operator", "password": "Secret-pass-123", "allowed_hosts": ["10.0.0.0/8"],
              "must_change_password": False}],
        11: [{"priority": 5, "cld_prefixes": None}, {"id": 2}, {"transport": "sctp"}, [1, 2]],
    }
    for k, bodies in kinds.items():
        for i, b in enumerate(bodies):
            write("api_json", f"k{k}-{i}", bytes([k]) + json.dumps(b).encode())
    write("api_json", "deep", bytes([1]) + b"[" * 200 + b"]" * 200)
    write("api_json", "dup", bytes([8]) + b'{"username":"a","username":"b","password":"c"}')

    # The call core: scripts of steps (see fuzz_targets/call_core.rs).
    inv, sep = msgs["invite"], "\n%%\n"
    ack = req("ACK", "call-1", to_tag="fuzztag", cseq=1)
    bye = req("BYE", "call-1", to_tag="fuzztag", cseq=2)
    scripts = {
        "call": ["M0" + inv, "r1180", "r1200s", "M0" + ack, "t61000", "M0" + bye, "t5000"],
        "failover": ["M0" + inv, "t4000", "r2503", "t40000"],
        "cancel": ["M0" + inv, "r1180", "M0" + req("CANCEL", "call-1", cseq=1), "r1487", "t33000"],
        "digest": ["M3" + invite("d1"), "M3" + invite("d1", extra=f"Authorization: {AUTH}\r\n"), "t1000"],
        "scanner": ["M4" + msgs["register"], "M4" + msgs["register"], "M4" + req("OPTIONS", "s2"),
                    "M4" + invite("s3"), "t100", "f4", "f4", "f4"],
        "tcp": ["M5" + inv, "r1200s", "M5" + ack, "h0", "t1000", "x", "z"],
        "thirdparty": ["M0" + inv, "r1200s", "M4" + bye, "M3" + bye, "t100", "M1" + req("BYE", "up", to_tag="x")],
        "reinvite": ["M0" + inv, "r1200s", "M0" + ack,
                     "M0" + invite("call-1").replace("To: <sip:4420555@10.0.0.2>", "To: <sip:4420555@10.0.0.2>;tag=fuzztag").replace("CSeq: 1", "CSeq: 3"),
                     "r0200s", "t1800000"],
        # Crashes: mid-call (the BYE after it finds the adopted call), in setup, torn record.
        "restart": ["M0" + inv, "r1180", "r1200s", "M0" + ack, "t2000", "k", "M0" + bye, "r1200", "t33000"],
        "restart_setup": ["M0" + inv, "r1180", "k", "r1200s", "t33000"],
        "restart_torn": ["M0" + inv, "r1200s", "M0" + ack, "kc", "M0" + bye, "t1000"],
        "malformed": ["m0" + msgs["badinv01"], "m0" + msgs["clerr"], "m4" + msgs["nul"], msgs["wsinv"], "M0" + msgs["compact"]],
    }
    for n, steps in scripts.items():
        write("call_core", n, sep.join(steps))

if __name__ == "__main__":
    main()
