--[[
carillon.lua -- Wireshark / tshark dissector for the Carillon bus wire format, version 1.

What it is
  A Lua dissector for the frames described in docs/wire-format.md (one frame per
  UDP datagram): the fixed 40-byte little-endian header, the sections of the body
  (data, positions, naks, retransmissions, silentRounds, suspicions, viewFields,
  viewPositions, viewMembers, viewCut, relayedSilence, clockSamples, and unknown
  sections, skippable or not), frames embedded in retransmission sections
  (dissected recursively) and the trailing authentication tag. It checks the same
  rules as FrameView.decode and reports every violation as an expert info
  (group Malformed, severity Error) instead of raising a Lua error.

How to use it
  One-off, from the repository root:
    tshark -X lua_script:tools/carillon.lua -r capture.pcap -Y carillon
    tshark -X lua_script:tools/carillon.lua -r capture.pcap -Y carillon -V -O carillon
    wireshark -X lua_script:tools/carillon.lua capture.pcap
  Permanently: copy this file to ~/.local/lib/wireshark/plugins/ (Wireshark >= 2.6;
  older versions use ~/.wireshark/plugins/) and restart Wireshark.

  Frames are found on UDP port 7400 (preference carillon.udp_port; 0 disables the
  port registration), and on any other UDP port by a heuristic that accepts a
  payload only when it starts with the magic "CRLN" (43 52 4C 4E) and version 1.
  The heuristic can be switched off under Analyze > Enabled Protocols
  ("carillon_udp"). Preference carillon.dissect_embedded (default on) dissects the
  frames inside retransmission sections; off shows them as bytes.
  Needs Wireshark/tshark >= 3.0 (written for 4.0, classic Lua API, Lua 5.2).

  The tag length is self-describing (header flag bit 0 "authenticated" and the
  header's Tag Length field), so there is no tag-length preference.

Fields (display-filter names)
  Frame header:
    carillon.magic            u32  0x4E4C5243 ("CRLN" on the wire)
    carillon.version          u8   1
    carillon.kind             u8   1 slot, 2 repair, 3 membership, 4 bulk (reserved)
    carillon.flags            u16
    carillon.flags.authenticated  bool, bit 0
    carillon.flags.unknown    u16  bits other than bit 0 (must be 0)
    carillon.sender           u16  sender rank (membership frames: sender node)
    carillon.section_count    u16  number of sections in the body
    carillon.body_length      u32  bytes of sections after the header
    carillon.epoch            u32  view number
    carillon.tag_length       u16  bytes of tag after the body
    carillon.reserved         u16  must be 0
    carillon.round            u64  TDMA round
    carillon.timestamp        u64  sender timestamp, ns on the view's timebase
  Sections:
    carillon.section          (subtree) one section
    carillon.section.code     u16  section kind, with names
    carillon.section.skippable  bool, bit 0x8000 of the code
    carillon.section.count    u16  entry count
    carillon.section.length   u32  bytes of entries after the 8-byte section header
    carillon.section.bytes    bytes of unknown/skipped sections and of partial entries
  12-byte rank entries (positions, suspicions, clockSamples, viewFields,
  viewPositions, viewMembers, viewCut):
    carillon.entry            (subtree) one entry
    carillon.entry.rank       u16  rank, node or view-field key (the first field)
    carillon.entry.reserved   u16  must be 0 (also used for NAK/relayed-silence entries)
    carillon.entry.value      u64  round, incarnation, field value, ... (for clock
                                   samples the raw bits; hidden in the tree)
    carillon.clock.min_one_way  i64  clock samples: min receive - send, ns (signed)
    carillon.view.key         u16  viewFields: the ViewField key, with names
  NAK entries (20 bytes: rank, reserved, first, last):
    carillon.nak              (subtree)
    carillon.nak.rank  carillon.nak.first  carillon.nak.last
  Relayed-silence entries (same layout as NAKs):
    carillon.relayed          (subtree)
    carillon.relayed.rank  carillon.relayed.first  carillon.relayed.last
  Silent-rounds entries (16 bytes):
    carillon.silent           (subtree)
    carillon.silent.first  carillon.silent.last
  Data messages:
    carillon.msg              (subtree) one message
    carillon.msg.sequence     u64
    carillon.msg.length       u32  payload length
    carillon.msg.payload      bytes
  Retransmission entries:
    carillon.retrans          (subtree) one retransmitted frame
    carillon.retrans.length   u32  embedded frame length
    carillon.retrans.frame    bytes (when the embedded frame is not dissected)
    carillon.embedded         (subtree) the dissected embedded frame; its header
                              and sections use the same field names as above
  Trailer:
    carillon.tag              bytes, authentication tag
    carillon.trailing         bytes after header + body + tag (a decoder error)
  Expert infos: carillon.expert.truncated, carillon.expert.length,
    carillon.expert.invalid, carillon.expert.embedded (all Malformed/Error: what
    FrameView.decode rejects; the text names the WireError case),
    carillon.expert.skipped (Undecoded/Note: unknown skippable section),
    carillon.expert.ignored (Protocol/Warn: silent range not below the frame's round),
    carillon.expert.not_captured (Undecoded/Warn: capture shorter than the datagram).
    Filter malformed frames with: carillon && _ws.expert.severity == error

  Info column: "<kind> r=<round> s=<sender> e=<epoch>" followed by counts, e.g.
  "slot r=123456 s=2 e=1 msgs=3 naks=1", "repair r=9 s=0 e=1 retrans=2 silent=1",
  "membership r=5 s=4 e=0 join fields=2"; " [malformed]" when an error was found.
--]]

local carillon = Proto("carillon", "Carillon bus")

------------------------------------------------------------------------------
-- Constants (docs/wire-format.md, Sources/CarillonWire/Frame.swift)
------------------------------------------------------------------------------

local MAGIC = 0x4E4C5243          -- "CRLN" read as little-endian u32
local VERSION = 1
local HEADER_BYTES = 40
local SECTION_HEADER_BYTES = 8
local MESSAGE_HEADER_BYTES = 12
local RANK_ENTRY_BYTES = 12
local NAK_ENTRY_BYTES = 20
local SILENT_ENTRY_BYTES = 16
local RETRANS_HEADER_BYTES = 4
local MAX_TAG_BYTES = 64
local MAX_FRAME_BYTES = 65507
local DEFAULT_PORT = 7400

local KIND_SLOT, KIND_REPAIR, KIND_MEMBERSHIP = 1, 2, 3

local KIND_NAMES = {
    [1] = "slot",
    [2] = "repair",
    [3] = "membership",
    [4] = "bulk (reserved)",
}

local SEC_DATA           = 0x0001
local SEC_POSITIONS      = 0x0002
local SEC_NAKS           = 0x0003
local SEC_RETRANS        = 0x0004
local SEC_SILENT         = 0x0005
local SEC_SUSPICIONS     = 0x0010
local SEC_VIEW_FIELDS    = 0x0020
local SEC_VIEW_POSITIONS = 0x0021
local SEC_VIEW_MEMBERS   = 0x0022
local SEC_VIEW_CUT       = 0x0023
local SEC_RELAYED        = 0x0024
local SEC_CLOCK          = 0x8006
local SKIPPABLE_BIT      = 0x8000

local SECTION_NAMES = {
    [SEC_DATA]           = "data",
    [SEC_POSITIONS]      = "positions",
    [SEC_NAKS]           = "naks",
    [SEC_RETRANS]        = "retransmissions",
    [SEC_SILENT]         = "silentRounds",
    [SEC_SUSPICIONS]     = "suspicions",
    [SEC_VIEW_FIELDS]    = "viewFields",
    [SEC_VIEW_POSITIONS] = "viewPositions",
    [SEC_VIEW_MEMBERS]   = "viewMembers",
    [SEC_VIEW_CUT]       = "viewCut",
    [SEC_RELAYED]        = "relayedSilence",
    [SEC_CLOCK]          = "clockSamples",
}

-- Which known sections each frame kind may carry (FrameView.isAllowed).
local ALLOWED = {
    [KIND_SLOT] = {
        [SEC_DATA] = true, [SEC_POSITIONS] = true, [SEC_NAKS] = true,
        [SEC_SILENT] = true, [SEC_CLOCK] = true, [SEC_SUSPICIONS] = true,
    },
    [KIND_REPAIR] = {
        [SEC_POSITIONS] = true, [SEC_NAKS] = true, [SEC_RETRANS] = true,
        [SEC_SILENT] = true, [SEC_RELAYED] = true,
    },
    [KIND_MEMBERSHIP] = {
        [SEC_DATA] = true, [SEC_VIEW_FIELDS] = true, [SEC_VIEW_POSITIONS] = true,
        [SEC_VIEW_MEMBERS] = true, [SEC_VIEW_CUT] = true,
    },
}

local VIEW_FIELD_NAMES = {
    [1]  = "promisedBallot",
    [2]  = "acceptedBallot",
    [3]  = "decided",
    [4]  = "incarnation",
    [5]  = "proposingBallot",
    [6]  = "startRound",
    [7]  = "holdsCut",
    [8]  = "joinRequest",
    [9]  = "stateBytes",
    [10] = "stateFor",
    [11] = "stateReceived",
    [12] = "leaving",
    [13] = "run",
}
local BALLOT_KEYS = { [1] = true, [2] = true, [5] = true }

------------------------------------------------------------------------------
-- Fields
------------------------------------------------------------------------------

local f = {
    magic          = ProtoField.uint32("carillon.magic", "Magic", base.HEX, nil, nil, "0x4E4C5243, \"CRLN\" on the wire"),
    version        = ProtoField.uint8("carillon.version", "Version", base.DEC),
    kind           = ProtoField.uint8("carillon.kind", "Frame kind", base.DEC, KIND_NAMES),
    flags          = ProtoField.uint16("carillon.flags", "Flags", base.HEX),
    flag_auth      = ProtoField.bool("carillon.flags.authenticated", "Authenticated", 16, nil, 0x0001,
                                     "The frame ends with a Tag Length-byte authentication tag"),
    flag_unknown   = ProtoField.uint16("carillon.flags.unknown", "Unknown flag bits", base.HEX, nil, 0xFFFE),
    sender         = ProtoField.uint16("carillon.sender", "Sender rank", base.DEC, nil, nil,
                                       "Sender's rank in the view (membership frames: the sender's node)"),
    section_count  = ProtoField.uint16("carillon.section_count", "Section count", base.DEC),
    body_length    = ProtoField.uint32("carillon.body_length", "Body length", base.DEC),
    epoch          = ProtoField.uint32("carillon.epoch", "Epoch", base.DEC),
    tag_length     = ProtoField.uint16("carillon.tag_length", "Tag length", base.DEC),
    reserved       = ProtoField.uint16("carillon.reserved", "Reserved", base.HEX),
    round          = ProtoField.uint64("carillon.round", "Round", base.DEC),
    timestamp      = ProtoField.uint64("carillon.timestamp", "Sender timestamp (ns)", base.DEC),

    section        = ProtoField.none("carillon.section", "Section"),
    section_code   = ProtoField.uint16("carillon.section.code", "Section kind", base.HEX, SECTION_NAMES),
    section_skip   = ProtoField.bool("carillon.section.skippable", "Skippable", 16, nil, SKIPPABLE_BIT),
    section_count_e = ProtoField.uint16("carillon.section.count", "Entry count", base.DEC),
    section_length = ProtoField.uint32("carillon.section.length", "Section length", base.DEC),
    section_bytes  = ProtoField.bytes("carillon.section.bytes", "Undecoded bytes"),

    entry          = ProtoField.none("carillon.entry", "Entry"),
    entry_rank     = ProtoField.uint16("carillon.entry.rank", "Rank/node/key", base.DEC),
    entry_reserved = ProtoField.uint16("carillon.entry.reserved", "Reserved", base.HEX),
    entry_value    = ProtoField.uint64("carillon.entry.value", "Value", base.DEC),
    clock_min      = ProtoField.int64("carillon.clock.min_one_way", "Min one-way (ns)", base.DEC),
    view_key       = ProtoField.uint16("carillon.view.key", "View field", base.DEC, VIEW_FIELD_NAMES),

    nak            = ProtoField.none("carillon.nak", "NAK"),
    nak_rank       = ProtoField.uint16("carillon.nak.rank", "Rank", base.DEC),
    nak_first      = ProtoField.uint64("carillon.nak.first", "First round", base.DEC),
    nak_last       = ProtoField.uint64("carillon.nak.last", "Last round", base.DEC),

    relayed        = ProtoField.none("carillon.relayed", "Relayed silence"),
    relayed_rank   = ProtoField.uint16("carillon.relayed.rank", "Rank", base.DEC),
    relayed_first  = ProtoField.uint64("carillon.relayed.first", "First round", base.DEC),
    relayed_last   = ProtoField.uint64("carillon.relayed.last", "Last round", base.DEC),

    silent         = ProtoField.none("carillon.silent", "Silent rounds"),
    silent_first   = ProtoField.uint64("carillon.silent.first", "First round", base.DEC),
    silent_last    = ProtoField.uint64("carillon.silent.last", "Last round", base.DEC),

    msg            = ProtoField.none("carillon.msg", "Message"),
    msg_sequence   = ProtoField.uint64("carillon.msg.sequence", "Sequence", base.DEC),
    msg_length     = ProtoField.uint32("carillon.msg.length", "Payload length", base.DEC),
    msg_payload    = ProtoField.bytes("carillon.msg.payload", "Payload"),

    retrans        = ProtoField.none("carillon.retrans", "Retransmitted frame"),
    retrans_length = ProtoField.uint32("carillon.retrans.length", "Embedded frame length", base.DEC),
    retrans_frame  = ProtoField.bytes("carillon.retrans.frame", "Embedded frame"),
    embedded       = ProtoField.none("carillon.embedded", "Embedded frame"),

    tag            = ProtoField.bytes("carillon.tag", "Authentication tag"),
    trailing       = ProtoField.bytes("carillon.trailing", "Trailing bytes"),
}

do
    local list = {}
    for _, field in pairs(f) do list[#list + 1] = field end
    carillon.fields = list
end

local ef = {
    truncated = ProtoExpert.new("carillon.expert.truncated", "Truncated",
                                expert.group.MALFORMED, expert.severity.ERROR),
    length    = ProtoExpert.new("carillon.expert.length", "Length or count mismatch",
                                expert.group.MALFORMED, expert.severity.ERROR),
    invalid   = ProtoExpert.new("carillon.expert.invalid", "Invalid value",
                                expert.group.MALFORMED, expert.severity.ERROR),
    embedded  = ProtoExpert.new("carillon.expert.embedded", "Malformed embedded frame",
                                expert.group.MALFORMED, expert.severity.ERROR),
    skipped   = ProtoExpert.new("carillon.expert.skipped", "Unknown skippable section",
                                expert.group.UNDECODED, expert.severity.NOTE),
    ignored   = ProtoExpert.new("carillon.expert.ignored", "Ignored by the receiver",
                                expert.group.PROTOCOL, expert.severity.WARN),
    capture   = ProtoExpert.new("carillon.expert.not_captured", "Packet size limited during capture",
                                expert.group.UNDECODED, expert.severity.WARN),
}
carillon.experts = { ef.truncated, ef.length, ef.invalid, ef.embedded, ef.skipped, ef.ignored, ef.capture }

------------------------------------------------------------------------------
-- Preferences
------------------------------------------------------------------------------

carillon.prefs.udp_port = Pref.uint("UDP port", DEFAULT_PORT,
    "UDP port of the Carillon bus (0: none; the heuristic still finds frames on any port)")
carillon.prefs.dissect_embedded = Pref.bool("Dissect embedded frames", true,
    "Dissect the frames carried in retransmission sections (off: show them as bytes)")

------------------------------------------------------------------------------
-- Helpers. Every read is preceded by a length check against `cap`, the end of
-- the bytes that are both captured and inside the frame being dissected.
------------------------------------------------------------------------------

local function u8(tvb, o) return tvb:range(o, 1):uint() end
local function u16(tvb, o) return tvb:range(o, 2):le_uint() end
local function u32(tvb, o) return tvb:range(o, 4):le_uint() end
local function u64(tvb, o) return tvb:range(o, 8):le_uint64() end

-- Adds an expert info to `item` and marks the frame as malformed (unless `soft`).
local function problem(st, item, expert_field, text, soft)
    item:add_proto_expert_info(expert_field, text)
    if not soft then st.bad = true end
end

-- Shows bytes [o, lim) as undecoded, if there are any.
local function undecoded(st, tree, o, lim)
    if lim > o then
        return tree:add(f.section_bytes, st.tvb:range(o, lim - o))
    end
    return tree
end

local function section_name(code)
    return SECTION_NAMES[code] or string.format("unknown 0x%04x", code)
end

------------------------------------------------------------------------------
-- Entry dissectors. `o` is the entry's offset; the caller checked that the
-- whole entry is readable.
------------------------------------------------------------------------------

-- 12-byte entry: rank/node/key u16, reserved u16, value u64.
local function rank_entry(st, tree, o, index, code)
    local tvb = st.tvb
    local key = u16(tvb, o)
    local reserved = u16(tvb, o + 2)
    local value = u64(tvb, o + 4)
    local e = tree:add(f.entry, tvb:range(o, RANK_ENTRY_BYTES))
    e:add_le(f.entry_rank, tvb:range(o, 2))
    if code == SEC_VIEW_FIELDS then
        e:add_le(f.view_key, tvb:range(o, 2))
    end
    local it_res = e:add_le(f.entry_reserved, tvb:range(o + 2, 2))
    if reserved ~= 0 then
        problem(st, it_res, ef.invalid, "reserved field of the entry is not 0 (reservedFieldNotZero)")
    end
    local it_val = e:add_le(f.entry_value, tvb:range(o + 4, 8))

    local text
    if code == SEC_POSITIONS then
        text = string.format("Position: rank %d received below round %s", key, tostring(value))
    elseif code == SEC_SUSPICIONS then
        text = string.format("Suspicion: rank %d silent since round %s", key, tostring(value))
    elseif code == SEC_CLOCK then
        local ns = tvb:range(o + 4, 8):le_int64()
        e:add_le(f.clock_min, tvb:range(o + 4, 8))
        it_val:set_hidden(true)
        text = string.format("Clock sample: rank %d, min one-way %s ns", key, tostring(ns))
    elseif code == SEC_VIEW_FIELDS then
        local name = VIEW_FIELD_NAMES[key] or string.format("unknown key %d", key)
        text = string.format("View field: %s = %s", name, tostring(value))
        if BALLOT_KEYS[key] then
            -- A ballot is counter << 16 | node; the counter has 48 bits, exact in a double.
            local node = u16(tvb, o + 4)
            local counter = u32(tvb, o + 6) + u16(tvb, o + 10) * 4294967296
            text = text .. string.format(" (counter %.0f, node %d)", counter, node)
        end
        st.keys[key] = true
    elseif code == SEC_VIEW_POSITIONS then
        text = string.format("View position: rank %d received below round %s", key, tostring(value))
    elseif code == SEC_VIEW_MEMBERS then
        text = string.format("Member (rank %d): node %d, incarnation %s", index - 1, key, tostring(value))
    elseif code == SEC_VIEW_CUT then
        text = string.format("Cut: rank %d, round %s", key, tostring(value))
    else
        text = string.format("Entry: %d = %s", key, tostring(value))
    end
    e:set_text(text)
end

-- 20-byte entry: rank u16, reserved u16, first u64, last u64 (NAKs, relayed silence).
local function range_entry(st, tree, o, index, code)
    local tvb = st.tvb
    local relayed = (code == SEC_RELAYED)
    local rank = u16(tvb, o)
    local reserved = u16(tvb, o + 2)
    local first = u64(tvb, o + 4)
    local last = u64(tvb, o + 12)
    local e = tree:add(relayed and f.relayed or f.nak, tvb:range(o, NAK_ENTRY_BYTES))
    e:add_le(relayed and f.relayed_rank or f.nak_rank, tvb:range(o, 2))
    local it_res = e:add_le(f.entry_reserved, tvb:range(o + 2, 2))
    if reserved ~= 0 then
        problem(st, it_res, ef.invalid, "reserved field of the entry is not 0 (reservedFieldNotZero)")
    end
    e:add_le(relayed and f.relayed_first or f.nak_first, tvb:range(o + 4, 8))
    e:add_le(relayed and f.relayed_last or f.nak_last, tvb:range(o + 12, 8))
    e:set_text(string.format("%s: rank %d, rounds %s...%s", relayed and "Relayed silence" or "NAK",
                             rank, tostring(first), tostring(last)))
    if first > last then
        problem(st, e, ef.invalid, string.format("first round %s > last round %s (invalidRange)",
                                                 tostring(first), tostring(last)))
    end
end

-- 16-byte entry: first u64, last u64 (the frame sender's silent rounds).
local function silent_entry(st, tree, o, index, code)
    local tvb = st.tvb
    local first = u64(tvb, o)
    local last = u64(tvb, o + 8)
    local e = tree:add(f.silent, tvb:range(o, SILENT_ENTRY_BYTES))
    e:add_le(f.silent_first, tvb:range(o, 8))
    e:add_le(f.silent_last, tvb:range(o + 8, 8))
    e:set_text(string.format("Silent rounds: %s...%s", tostring(first), tostring(last)))
    if first > last then
        problem(st, e, ef.invalid, string.format("first round %s > last round %s (invalidRange)",
                                                 tostring(first), tostring(last)))
    elseif not st.embedded and not (last < st.round) then
        problem(st, e, ef.ignored,
                "last silent round is not below the frame's round; the ordering layer ignores this range", true)
    end
end

------------------------------------------------------------------------------
-- Section dissectors. [sstart, send) is the section's entries as declared;
-- slim <= send is where the readable part ends (body end, frame end, capture end).
------------------------------------------------------------------------------

local function fixed_section(st, sitem, sstart, send, slim, count, stride, code, entry_fn)
    local slen = send - sstart
    if slen ~= count * stride then
        problem(st, sitem, ef.length, string.format(
            "%d entries of %d bytes need %d bytes, section length is %d (entryCountMismatch)",
            count, stride, count * stride, slen))
    end
    local o = sstart
    local index = 0
    while slim - o >= stride do
        index = index + 1
        entry_fn(st, sitem, o, index, code)
        o = o + stride
    end
    if o < slim then
        -- a partial entry: already reported as a length mismatch, a truncated
        -- section or a capture limit
        undecoded(st, sitem, o, slim):append_text(string.format(" (partial entry: %d of %d bytes)", slim - o, stride))
    end
end

local function data_section(st, sitem, sstart, send, slim, count)
    local tvb = st.tvb
    local o = sstart
    local done = 0
    local stopped = false
    for i = 1, count do
        if slim - o < MESSAGE_HEADER_BYTES then
            if o < slim then
                undecoded(st, sitem, o, slim):append_text(string.format(
                    " (message %d of %d: header needs %d bytes, %d left)", i, count, MESSAGE_HEADER_BYTES, slim - o))
                o = slim
            end
            stopped = true
            break
        end
        local sequence = u64(tvb, o)
        local plen = u32(tvb, o + 8)
        local avail = slim - (o + MESSAGE_HEADER_BYTES)
        local take = math.min(plen, avail)
        local m = sitem:add(f.msg, tvb:range(o, MESSAGE_HEADER_BYTES + take))
        m:set_text(string.format("Message %d: sequence %s, %d bytes", i, tostring(sequence), plen))
        m:add_le(f.msg_sequence, tvb:range(o, 8))
        m:add_le(f.msg_length, tvb:range(o + 8, 4))
        if take > 0 then
            m:add(f.msg_payload, tvb:range(o + MESSAGE_HEADER_BYTES, take))
        end
        done = done + 1
        if plen > avail then
            if slim == send then
                problem(st, m, ef.length, string.format(
                    "payload length %d runs past the end of the section (%d bytes left) (entryCountMismatch)",
                    plen, avail))
            else
                m:append_text(string.format(" [%d of %d payload bytes present]", avail, plen))
            end
            o = slim
            stopped = true
            break
        end
        o = o + MESSAGE_HEADER_BYTES + plen
    end
    if slim == send then
        if stopped and done < count then
            problem(st, sitem, ef.length, string.format(
                "section declares %d messages, only %d fit (entryCountMismatch)", count, done))
        elseif o < send then
            local t = undecoded(st, sitem, o, send)
            problem(st, t, ef.length, string.format(
                "%d bytes after the last of %d messages (entryCountMismatch)", send - o, count))
        end
    end
    st.msgs = st.msgs + done
end

local dissect_frame   -- forward declaration (retransmission sections recurse)

local function retrans_section(st, sitem, sstart, send, slim, count)
    local tvb = st.tvb
    local o = sstart
    local done = 0
    local stopped = false
    for i = 1, count do
        if slim - o < RETRANS_HEADER_BYTES then
            if o < slim then
                undecoded(st, sitem, o, slim):append_text(string.format(
                    " (retransmission entry %d of %d: length needs 4 bytes, %d left)", i, count, slim - o))
                o = slim
            end
            stopped = true
            break
        end
        local elen = u32(tvb, o)
        local fstart = o + RETRANS_HEADER_BYTES
        local avail = slim - fstart
        local take = math.min(elen, avail)
        local fsize = math.min(elen, send - fstart)   -- the embedded frame, as far as the section declares it
        local e = sitem:add(f.retrans, tvb:range(o, RETRANS_HEADER_BYTES + take))
        e:add_le(f.retrans_length, tvb:range(o, 4))
        local label = string.format("Retransmitted frame %d: %d bytes", i, elen)
        if take > 0 then
            if carillon.prefs.dissect_embedded and st.depth == 0 then
                local inner = dissect_frame(tvb, st.pinfo, e, fstart, fsize, slim, true, st.depth + 1)
                if inner.header then
                    label = label .. string.format(", %s from rank %d, round %s, epoch %d, %d msgs",
                        KIND_NAMES[inner.kind] or ("kind " .. inner.kind), inner.sender,
                        tostring(inner.round), inner.epoch, inner.msgs)
                end
                st.embedded_msgs = st.embedded_msgs + inner.msgs
                if inner.bad then
                    problem(st, e, ef.embedded, "malformed embedded frame (malformedEmbeddedFrame)")
                end
            else
                e:add(f.retrans_frame, tvb:range(fstart, take))
            end
        end
        e:set_text(label)
        done = done + 1
        if elen > avail then
            if slim == send then
                problem(st, e, ef.length, string.format(
                    "embedded frame length %d runs past the end of the section (%d bytes left) (entryCountMismatch)",
                    elen, avail))
            else
                e:append_text(string.format(" [%d of %d bytes present]", avail, elen))
            end
            o = slim
            stopped = true
            break
        end
        o = fstart + elen
    end
    if slim == send then
        if stopped and done < count then
            problem(st, sitem, ef.length, string.format(
                "section declares %d frames, only %d fit (entryCountMismatch)", count, done))
        elseif o < send then
            local t = undecoded(st, sitem, o, send)
            problem(st, t, ef.length, string.format(
                "%d bytes after the last of %d frames (entryCountMismatch)", send - o, count))
        end
    end
end

local function dissect_section_entries(st, sitem, code, sstart, send, slim, count)
    if code == SEC_DATA then
        data_section(st, sitem, sstart, send, slim, count)
    elseif code == SEC_RETRANS then
        retrans_section(st, sitem, sstart, send, slim, count)
    elseif code == SEC_NAKS or code == SEC_RELAYED then
        fixed_section(st, sitem, sstart, send, slim, count, NAK_ENTRY_BYTES, code, range_entry)
    elseif code == SEC_SILENT then
        fixed_section(st, sitem, sstart, send, slim, count, SILENT_ENTRY_BYTES, code, silent_entry)
    elseif SECTION_NAMES[code] then
        -- positions, suspicions, clockSamples and the four view sections
        fixed_section(st, sitem, sstart, send, slim, count, RANK_ENTRY_BYTES, code, rank_entry)
    else
        undecoded(st, sitem, sstart, slim)
    end
end

------------------------------------------------------------------------------
-- Frame dissector
------------------------------------------------------------------------------

-- Dissects the frame of `fsize` bytes at `fstart` (a datagram, or a frame
-- embedded in a retransmission section) under `parent`; bytes at or after
-- `limit` are not available (not captured, or outside the enclosing section).
-- Returns a summary table.
dissect_frame = function(tvb, pinfo, parent, fstart, fsize, limit, embedded, depth)
    local cap = math.min(fstart + fsize, limit, tvb:len())
    if cap < fstart then cap = fstart end
    local avail = cap - fstart
    local st = {
        tvb = tvb, pinfo = pinfo, embedded = embedded, depth = depth,
        bad = false, header = false, msgs = 0, embedded_msgs = 0,
        counts = {}, keys = {}, kind = 0, sender = 0, epoch = 0, round = nil,
    }

    local root
    if embedded then
        root = parent:add(f.embedded, tvb:range(fstart, avail))
    else
        root = parent:add(carillon, tvb:range(fstart, avail))
    end
    st.root = root

    -- Header -----------------------------------------------------------------
    if avail < HEADER_BYTES then
        -- Show what there is of the header, then stop.
        if avail >= 4 then
            local it = root:add_le(f.magic, tvb:range(fstart, 4))
            if u32(tvb, fstart) ~= MAGIC then
                problem(st, it, ef.invalid, "bad magic (badMagic)")
            end
        end
        if avail >= 5 then root:add(f.version, tvb:range(fstart + 4, 1)) end
        if avail >= 6 then root:add(f.kind, tvb:range(fstart + 5, 1)); st.kind = u8(tvb, fstart + 5) end
        if avail >= 8 then root:add_le(f.flags, tvb:range(fstart + 6, 2)) end
        if avail >= 10 then root:add_le(f.sender, tvb:range(fstart + 8, 2)) end
        if avail > 10 then undecoded(st, root, fstart + 10, cap) end
        if fsize < HEADER_BYTES then
            problem(st, root, ef.truncated, string.format(
                "truncated frame header: the frame has %d bytes, the header needs %d (truncated)",
                fsize, HEADER_BYTES))
        else
            problem(st, root, ef.capture, string.format(
                "frame header not fully captured: %d of %d bytes", avail, HEADER_BYTES), true)
            st.partial = true
        end
        st.short = true
        return st
    end

    local magic     = u32(tvb, fstart)
    local version   = u8(tvb, fstart + 4)
    local kind      = u8(tvb, fstart + 5)
    local flags     = u16(tvb, fstart + 6)
    local sender    = u16(tvb, fstart + 8)
    local nsections = u16(tvb, fstart + 10)
    local body_len  = u32(tvb, fstart + 12)
    local epoch     = u32(tvb, fstart + 16)
    local tag_len   = u16(tvb, fstart + 20)
    local reserved  = u16(tvb, fstart + 22)
    local round     = u64(tvb, fstart + 24)
    st.header, st.kind, st.sender, st.epoch, st.round = true, kind, sender, epoch, round

    local it_magic = root:add_le(f.magic, tvb:range(fstart, 4))
    local it_version = root:add(f.version, tvb:range(fstart + 4, 1))
    if magic ~= MAGIC then
        problem(st, it_magic, ef.invalid, string.format(
            "bad magic 0x%08x, expected 0x4e4c5243 \"CRLN\" (badMagic)", magic))
        st.badmagic = true
        undecoded(st, root, fstart + 5, cap)
        return st
    end
    if version ~= VERSION then
        problem(st, it_version, ef.invalid, string.format(
            "unsupported version %d (unsupportedVersion)", version))
        st.badversion = true
        undecoded(st, root, fstart + 5, cap)
        return st
    end

    local it_kind = root:add(f.kind, tvb:range(fstart + 5, 1))
    if kind == 4 then
        problem(st, it_kind, ef.invalid, "frame kind 4 (bulk) is reserved and rejected by version 1 (unknownFrameKind)")
    elseif kind < 1 or kind > 3 then
        problem(st, it_kind, ef.invalid, string.format("unknown frame kind %d (unknownFrameKind)", kind))
    end

    local it_flags = root:add_le(f.flags, tvb:range(fstart + 6, 2))
    it_flags:add_le(f.flag_auth, tvb:range(fstart + 6, 2))
    it_flags:add_le(f.flag_unknown, tvb:range(fstart + 6, 2))
    local authenticated = (flags % 2) == 1
    if flags >= 2 then
        problem(st, it_flags, ef.invalid, string.format("unknown flag bits 0x%04x set (unknownFlags)", flags - flags % 2))
    end

    local it_sender = root:add_le(f.sender, tvb:range(fstart + 8, 2))
    if kind == KIND_MEMBERSHIP then it_sender:append_text(" (membership frame: sender node)") end
    local it_nsec = root:add_le(f.section_count, tvb:range(fstart + 10, 2))
    local it_body = root:add_le(f.body_length, tvb:range(fstart + 12, 4))
    root:add_le(f.epoch, tvb:range(fstart + 16, 4))
    local it_tag = root:add_le(f.tag_length, tvb:range(fstart + 20, 2))
    local it_res = root:add_le(f.reserved, tvb:range(fstart + 22, 2))
    root:add_le(f.round, tvb:range(fstart + 24, 8))
    root:add_le(f.timestamp, tvb:range(fstart + 32, 8))

    if reserved ~= 0 then
        problem(st, it_res, ef.invalid, "header reserved field is not 0 (reservedFieldNotZero)")
    end
    if authenticated then
        if tag_len == 0 or tag_len > MAX_TAG_BYTES then
            problem(st, it_tag, ef.invalid, string.format(
                "authenticated flag set but tag length %d is not 1...%d (badTag)", tag_len, MAX_TAG_BYTES))
        end
        if embedded then
            problem(st, it_flags, ef.invalid, "an embedded frame may not be authenticated (badTag)")
        end
    elseif tag_len ~= 0 then
        problem(st, it_tag, ef.invalid, string.format(
            "tag length %d without the authenticated flag (badTag)", tag_len))
    end
    -- FrameView.decode checks 40 + body + tag <= 65,507 (the code; the doc's
    -- decoding rules say "Body Length <= 65,467", which ignores the tag).
    local total = HEADER_BYTES + body_len + tag_len
    if total > MAX_FRAME_BYTES then
        problem(st, it_body, ef.invalid, string.format(
            "40 + body %d + tag %d exceeds %d bytes (lengthOverflow)", body_len, tag_len, MAX_FRAME_BYTES))
    end
    if total > fsize then
        problem(st, root, ef.truncated, string.format(
            "frame declares %d bytes (40 + body %d + tag %d), the %s has %d (truncated)",
            total, body_len, tag_len, embedded and "embedded frame" or "datagram", fsize))
    elseif total < fsize then
        problem(st, root, ef.length, string.format(
            "%d bytes after header + body + tag (frameLengthMismatch: declared %d, actual %d)",
            fsize - total, total, fsize))
    end
    if cap < fstart + fsize and not embedded then
        problem(st, root, ef.capture, string.format(
            "only %d of the datagram's %d bytes were captured; the rest is not dissected", avail, fsize), true)
        st.partial = true
    end

    -- Sections ---------------------------------------------------------------
    local body_start = fstart + HEADER_BYTES
    local body_end = body_start + body_len         -- as declared
    local bend = math.min(body_end, cap)           -- readable end of the body
    local o = body_start
    local found = 0
    local seen = {}
    local section_trouble = false
    local allowed = ALLOWED[kind]

    while o < bend do
        if bend - o < SECTION_HEADER_BYTES then
            local t = undecoded(st, root, o, bend)
            if bend == body_end then
                problem(st, t, ef.truncated, string.format(
                    "truncated section header: %d bytes left in the body, %d needed (truncated)",
                    bend - o, SECTION_HEADER_BYTES))
            else
                -- the rest of the body is missing from the datagram (reported on the
                -- frame) or from the capture (reported as not captured)
                t:append_text(" (partial section header)")
            end
            section_trouble = true
            o = bend
            break
        end
        found = found + 1
        local code = u16(tvb, o)
        local count = u16(tvb, o + 2)
        local slen = u32(tvb, o + 4)
        local sstart = o + SECTION_HEADER_BYTES
        local send = sstart + slen
        local slim = math.min(send, bend)

        local sitem = root:add(f.section, tvb:range(o, slim - o))
        sitem:set_text(string.format("Section %s (0x%04x): %d entries, %d bytes",
                                     section_name(code), code, count, slen))
        sitem:add_le(f.section_code, tvb:range(o, 2))
        sitem:add_le(f.section_skip, tvb:range(o, 2))
        sitem:add_le(f.section_count_e, tvb:range(o + 2, 2))
        local it_slen = sitem:add_le(f.section_length, tvb:range(o + 4, 4))

        if send > bend then
            section_trouble = true
            if send > body_end then
                problem(st, it_slen, ef.truncated, string.format(
                    "truncated section: length %d runs past the end of the body (%d bytes left) (truncated)",
                    slen, body_end - sstart))
            else
                -- the body is long enough; the bytes are missing from the capture
                sitem:append_text(string.format(" [%d of %d bytes present]", slim - sstart, slen))
            end
        end
        if found > nsections then
            problem(st, sitem, ef.length, string.format(
                "section %d is more than the header's section count %d (sectionCountMismatch)", found, nsections))
        end

        if SECTION_NAMES[code] then
            st.counts[code] = count
            if seen[code] then
                problem(st, sitem, ef.invalid, string.format(
                    "second %s section in one frame (duplicateSection)", section_name(code)))
            end
            seen[code] = true
            if allowed and not allowed[code] then
                problem(st, sitem, ef.invalid, string.format(
                    "%s section not allowed in a %s frame (sectionNotAllowed)", section_name(code), KIND_NAMES[kind]))
            elseif embedded and code == SEC_RETRANS then
                problem(st, sitem, ef.invalid, "retransmissions inside an embedded frame (no nesting)")
            end
            dissect_section_entries(st, sitem, code, sstart, send, slim, count)
        elseif code >= SKIPPABLE_BIT then
            problem(st, sitem, ef.skipped, string.format(
                "unknown section kind 0x%04x has the skippable bit; a decoder skips it", code), true)
            undecoded(st, sitem, sstart, slim)
        else
            problem(st, sitem, ef.invalid, string.format(
                "unknown section kind 0x%04x without the skippable bit (unknownSectionKind)", code))
            undecoded(st, sitem, sstart, slim)
        end
        o = slim
    end

    -- (more sections than declared was already reported on the extra sections)
    if not section_trouble and body_end <= cap and found < nsections then
        problem(st, it_nsec, ef.length, string.format(
            "header declares %d sections, the body holds %d (sectionCountMismatch)", nsections, found))
    end
    if embedded and kind ~= KIND_SLOT then
        problem(st, root, ef.invalid, "an embedded frame must be a slot frame (malformedEmbeddedFrame)")
    end

    -- Tag and trailing bytes --------------------------------------------------
    local tag_start = body_end
    if tag_len > 0 and tag_start < cap then
        local take = math.min(tag_len, cap - tag_start)
        local it = root:add(f.tag, tvb:range(tag_start, take))
        if take < tag_len then it:append_text(string.format(" [%d of %d bytes]", take, tag_len)) end
    end
    local frame_end = tag_start + tag_len
    if frame_end < cap then
        root:add(f.trailing, tvb:range(frame_end, cap - frame_end))
    end

    -- Tree label ------------------------------------------------------------
    local label = string.format(", %s, rank %d, epoch %d, round %s",
        KIND_NAMES[kind] or ("kind " .. kind), sender, epoch, tostring(round))
    if st.bad then label = label .. " [malformed]" end
    root:append_text(label)
    return st
end

------------------------------------------------------------------------------
-- Info column
------------------------------------------------------------------------------

local INFO_KIND = { [1] = "slot", [2] = "repair", [3] = "membership", [4] = "bulk" }

local function info_text(st, size)
    if st.short then
        return string.format("truncated frame header (%d bytes)%s", size,
                             st.partial and " [partial capture]" or "")
    end
    if st.badmagic then return "bad magic" end
    if st.badversion then return "unsupported version" end
    local parts = {
        INFO_KIND[st.kind] or ("kind=" .. st.kind),
        "r=" .. tostring(st.round), "s=" .. st.sender, "e=" .. st.epoch,
    }
    local c = st.counts
    if st.kind == KIND_MEMBERSHIP then
        if st.keys[8] then parts[#parts + 1] = "join" end
        if st.keys[10] then parts[#parts + 1] = "state" end
        if st.keys[11] then parts[#parts + 1] = "state-ack" end
        if st.keys[3] then parts[#parts + 1] = "decided" end
        if st.keys[12] then parts[#parts + 1] = "leaving" end
        if c[SEC_VIEW_FIELDS] then parts[#parts + 1] = "fields=" .. c[SEC_VIEW_FIELDS] end
        if c[SEC_VIEW_MEMBERS] then parts[#parts + 1] = "members=" .. c[SEC_VIEW_MEMBERS] end
        if c[SEC_DATA] then parts[#parts + 1] = "msgs=" .. c[SEC_DATA] end
    else
        if st.kind == KIND_SLOT or c[SEC_DATA] then parts[#parts + 1] = "msgs=" .. (c[SEC_DATA] or 0) end
        if c[SEC_RETRANS] then
            parts[#parts + 1] = "retrans=" .. c[SEC_RETRANS]
            if st.embedded_msgs > 0 then parts[#parts + 1] = "rmsgs=" .. st.embedded_msgs end
        end
        if c[SEC_NAKS] then parts[#parts + 1] = "naks=" .. c[SEC_NAKS] end
        if c[SEC_SILENT] then parts[#parts + 1] = "silent=" .. c[SEC_SILENT] end
        if c[SEC_RELAYED] then parts[#parts + 1] = "relayed=" .. c[SEC_RELAYED] end
        if c[SEC_SUSPICIONS] then parts[#parts + 1] = "susp=" .. c[SEC_SUSPICIONS] end
    end
    if st.bad then parts[#parts + 1] = "[malformed]" end
    if st.partial then parts[#parts + 1] = "[partial capture]" end
    return table.concat(parts, " ")
end

------------------------------------------------------------------------------
-- Entry points and registration
------------------------------------------------------------------------------

function carillon.dissector(tvb, pinfo, tree)
    local captured = tvb:len()
    local size = tvb:reported_len()
    pinfo.cols.protocol = "Carillon"
    local st = dissect_frame(tvb, pinfo, tree, 0, size, captured, false, 0)
    pinfo.cols.info:set(info_text(st, size))
    return captured
end

-- Heuristic for UDP: the payload must start with the magic and version 1.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 5 then return false end
    if u32(tvb, 0) ~= MAGIC or u8(tvb, 4) ~= VERSION then return false end
    carillon.dissector(tvb, pinfo, tree)
    return true
end
carillon:register_heuristic("udp", heuristic)

local registered_port = 0
local function register_port()
    local udp = DissectorTable.get("udp.port")
    local port = carillon.prefs.udp_port
    if port == registered_port then return end
    if registered_port ~= 0 then udp:remove(registered_port, carillon) end
    if port ~= 0 then udp:add(port, carillon) end
    registered_port = port
end

function carillon.prefs_changed()
    register_port()
end

register_port()
