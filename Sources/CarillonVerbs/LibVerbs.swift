import CIBVerbs
import Glibc

/// One RDMA device as libibverbs sees it, for `carillon devices`.
public struct VerbsDeviceInfo: Sendable, Hashable {
    public struct Port: Sendable, Hashable {
        public var number: Int
        /// `ibv_port_state_str`: "PORT_ACTIVE", "PORT_DOWN", …
        public var state: String
        public var isActive: Bool
        /// "InfiniBand" or "Ethernet" (RoCE).
        public var linkLayer: String
        public var activeMTUBytes: Int
        public var lid: UInt16
        /// The GID table's non-zero entries: index, GID text, type ("IB", "RoCE v1", "RoCE v2").
        public var gids: [(index: Int, gid: String, type: String)]

        public static func == (a: Port, b: Port) -> Bool {
            a.number == b.number && a.state == b.state && a.linkLayer == b.linkLayer && a.activeMTUBytes == b.activeMTUBytes
                && a.lid == b.lid && a.gids.map(\.index) == b.gids.map(\.index) && a.gids.map(\.gid) == b.gids.map(\.gid)
        }

        public func hash(into h: inout Hasher) {
            h.combine(number)
            h.combine(state)
            h.combine(gids.map(\.gid))
        }
    }

    public var name: String
    public var ports: [Port]
}

/// Device discovery through libibverbs.
public enum VerbsDevices {
    /// Every device and port libibverbs finds. Throws ``VerbsError/noKernelSupport``
    /// when the kernel has no RDMA at all; an empty list when it has, but no device.
    public static func list() throws(VerbsError) -> [VerbsDeviceInfo] {
        var count: Int32 = 0
        errno = 0
        guard let list = carillon_ibv_get_device_list(&count) else {
            switch errno {
            case ENOSYS, 0: throw .noKernelSupport
            case EPERM, EACCES: throw .permissionDenied(call: "ibv_get_device_list", errno: errno)
            case let e: throw .call("ibv_get_device_list", errno: e)
            }
        }
        defer { ibv_free_device_list(list) }
        var devices: [VerbsDeviceInfo] = []
        for i in 0..<Int(count) {
            guard let device = list[i] else { continue }
            let name = String(cString: ibv_get_device_name(device))
            guard let context = ibv_open_device(device) else {
                devices.append(VerbsDeviceInfo(name: name, ports: []))
                continue
            }
            defer { ibv_close_device(context) }
            var attributes = ibv_device_attr()
            guard ibv_query_device(context, &attributes) == 0 else {
                devices.append(VerbsDeviceInfo(name: name, ports: []))
                continue
            }
            var ports: [VerbsDeviceInfo.Port] = []
            for number in 1...max(1, Int(attributes.phys_port_cnt)) {
                var port = ibv_port_attr()
                guard carillon_ibv_query_port(context, UInt8(number), &port) == 0 else { continue }
                ports.append(describe(port: port, number: number, context: context))
            }
            devices.append(VerbsDeviceInfo(name: name, ports: ports))
        }
        return devices
    }

    static func describe(port: ibv_port_attr, number: Int, context: UnsafeMutablePointer<ibv_context>) -> VerbsDeviceInfo.Port {
        var gids: [(Int, String, String)] = []
        for index in 0..<Int(port.gid_tbl_len) {
            var entry = ibv_gid_entry()
            guard ibv_query_gid_ex(context, UInt32(number), UInt32(index), &entry, 0) == 0 else { continue }
            let bytes = withUnsafeBytes(of: entry.gid.raw) { Array($0) }
            guard bytes.contains(where: { $0 != 0 }) else { continue }
            let type =
                switch entry.gid_type {
                case UInt32(IBV_GID_TYPE_ROCE_V2.rawValue): "RoCE v2"
                case UInt32(IBV_GID_TYPE_ROCE_V1.rawValue): "RoCE v1"
                default: "IB"
                }
            gids.append((index, gidText(bytes), type))
        }
        return VerbsDeviceInfo.Port(
            number: number, state: String(cString: ibv_port_state_str(port.state)), isActive: port.state == IBV_PORT_ACTIVE,
            linkLayer: port.link_layer == UInt8(IBV_LINK_LAYER_ETHERNET) ? "Ethernet" : "InfiniBand",
            activeMTUBytes: mtuBytes(port.active_mtu), lid: port.lid, gids: gids)
    }

    static func mtuBytes(_ mtu: ibv_mtu) -> Int { 128 << Int(mtu.rawValue) }

    static func gidText(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}

/// Which device, port and GID a ``LibVerbsQueue`` opens.
public struct LibVerbsSettings: Sendable, Hashable {
    /// Device name (`mlx5_0`, `rxe0`); nil: the first device found.
    public var device: String?
    public var port = 1
    /// GID table index; nil: the first RoCE v2 entry on Ethernet, else index 0.
    public var gidIndex: Int?
    /// The queue key every datagram carries.
    public var queueKey: UInt32 = 0x4341_524C  // "CARL"
    public var sendQueueDepth = 1024
    public var receiveQueueDepth = 1024
    /// Asked of the device; the queue pair reports what it got.
    public var maxInlineBytes = 256

    public init(device: String? = nil, port: Int = 1, gidIndex: Int? = nil) {
        self.device = device
        self.port = port
        self.gidIndex = gidIndex
    }
}

/// A UD queue pair on a real device through libibverbs: the protection
/// domain, two completion queues (sends, receives), the queue pair moved
/// to ready-to-send, and address handles for peers.
public final class LibVerbsQueue: VerbsQueue {
    public let address: VerbsAddress
    public let maxInlineBytes: Int
    public let maxMessageBytes: Int
    public let deviceName: String
    let settings: LibVerbsSettings
    let context: UnsafeMutablePointer<ibv_context>
    let protectionDomain: UnsafeMutablePointer<ibv_pd>
    let sendQueue: UnsafeMutablePointer<ibv_cq>
    let receiveQueue: UnsafeMutablePointer<ibv_cq>
    let queuePair: UnsafeMutablePointer<ibv_qp>
    let gidIndex: Int
    var regions: [UnsafeMutablePointer<ibv_mr>] = []
    /// Address handles made and not released (destroyed at ``close()``, after the queue pair).
    var addressHandles: Set<UInt> = []
    let work: UnsafeMutablePointer<ibv_wc>
    let workCapacity = 64

    /// Opens the device and port, and brings a UD queue pair to ready-to-send.
    /// Every failure says what is missing (``VerbsError``).
    public init(settings: LibVerbsSettings) throws(VerbsError) {
        self.settings = settings
        var count: Int32 = 0
        errno = 0
        guard let list = carillon_ibv_get_device_list(&count) else {
            if errno == EPERM || errno == EACCES { throw .permissionDenied(call: "ibv_get_device_list", errno: errno) }
            throw .noKernelSupport
        }
        defer { ibv_free_device_list(list) }
        var names: [String] = []
        var chosen: UnsafeMutablePointer<ibv_device>?
        for i in 0..<Int(count) {
            guard let device = list[i] else { continue }
            let name = String(cString: ibv_get_device_name(device))
            names.append(name)
            if chosen == nil, settings.device == nil || settings.device == name { chosen = device }
        }
        guard let device = chosen else {
            if let wanted = settings.device, !names.isEmpty { throw .deviceNotFound(name: wanted, available: names) }
            throw .noDevice
        }
        deviceName = String(cString: ibv_get_device_name(device))
        guard let context = ibv_open_device(device) else { throw Self.failure("ibv_open_device(\(deviceName))") }
        var port = ibv_port_attr()
        guard carillon_ibv_query_port(context, UInt8(clamping: settings.port), &port) == 0 else {
            ibv_close_device(context)
            throw .portNotActive(device: deviceName, port: settings.port, state: "missing")
        }
        guard port.state == IBV_PORT_ACTIVE else {
            ibv_close_device(context)
            throw .portNotActive(device: deviceName, port: settings.port, state: String(cString: ibv_port_state_str(port.state)))
        }
        let info = VerbsDevices.describe(port: port, number: settings.port, context: context)
        let gid = settings.gidIndex ?? info.gids.first(where: { $0.type == "RoCE v2" })?.index ?? info.gids.first?.index
        guard let gid, gid < Int(port.gid_tbl_len) else {
            ibv_close_device(context)
            throw .noGID(device: deviceName, port: settings.port, index: settings.gidIndex)
        }
        var gidValue = ibv_gid()
        guard ibv_query_gid(context, UInt8(clamping: settings.port), Int32(gid), &gidValue) == 0 else {
            ibv_close_device(context)
            throw .noGID(device: deviceName, port: settings.port, index: gid)
        }
        gidIndex = gid
        maxMessageBytes = VerbsDevices.mtuBytes(port.active_mtu)
        self.context = context

        guard let pd = ibv_alloc_pd(context) else {
            ibv_close_device(context)
            throw Self.failure("ibv_alloc_pd")
        }
        guard let scq = ibv_create_cq(context, Int32(settings.sendQueueDepth), nil, nil, 0),
            let rcq = ibv_create_cq(context, Int32(settings.receiveQueueDepth), nil, nil, 0)
        else {
            ibv_dealloc_pd(pd)
            ibv_close_device(context)
            throw Self.failure("ibv_create_cq")
        }
        var initial = ibv_qp_init_attr()
        initial.send_cq = scq
        initial.recv_cq = rcq
        initial.qp_type = IBV_QPT_UD
        initial.sq_sig_all = 1
        initial.cap.max_send_wr = UInt32(settings.sendQueueDepth)
        initial.cap.max_recv_wr = UInt32(settings.receiveQueueDepth)
        initial.cap.max_send_sge = 1
        initial.cap.max_recv_sge = 1
        initial.cap.max_inline_data = UInt32(settings.maxInlineBytes)
        guard let qp = ibv_create_qp(pd, &initial) else {
            ibv_destroy_cq(scq)
            ibv_destroy_cq(rcq)
            ibv_dealloc_pd(pd)
            ibv_close_device(context)
            throw Self.failure("ibv_create_qp (UD)")
        }
        protectionDomain = pd
        sendQueue = scq
        receiveQueue = rcq
        queuePair = qp
        maxInlineBytes = Int(initial.cap.max_inline_data)
        work = .allocate(capacity: workCapacity)
        address = VerbsAddress(
            gid: withUnsafeBytes(of: gidValue.raw) { Array($0) }, lid: port.lid, queuePair: qp.pointee.qp_num, queueKey: settings.queueKey)

        // RESET → INIT → RTR → RTS (a UD queue pair needs no peer to get there).
        var attributes = ibv_qp_attr()
        attributes.qp_state = IBV_QPS_INIT
        attributes.pkey_index = 0
        attributes.port_num = UInt8(clamping: settings.port)
        attributes.qkey = settings.queueKey
        var mask = IBV_QP_STATE.rawValue | IBV_QP_PKEY_INDEX.rawValue | IBV_QP_PORT.rawValue | IBV_QP_QKEY.rawValue
        var result = ibv_modify_qp(qp, &attributes, Int32(mask))
        if result == 0 {
            attributes = ibv_qp_attr()
            attributes.qp_state = IBV_QPS_RTR
            result = ibv_modify_qp(qp, &attributes, Int32(IBV_QP_STATE.rawValue))
        }
        if result == 0 {
            attributes = ibv_qp_attr()
            attributes.qp_state = IBV_QPS_RTS
            attributes.sq_psn = 0
            mask = IBV_QP_STATE.rawValue | IBV_QP_SQ_PSN.rawValue
            result = ibv_modify_qp(qp, &attributes, Int32(mask))
        }
        guard result == 0 else {
            let code = result
            close()
            throw .call("ibv_modify_qp (UD to ready-to-send)", errno: code)
        }
    }

    deinit { close() }

    private var closed = false

    public func close() {
        guard !closed else { return }
        closed = true
        ibv_destroy_qp(queuePair)
        for raw in addressHandles { if let ah = UnsafeMutablePointer<ibv_ah>(bitPattern: raw) { ibv_destroy_ah(ah) } }
        addressHandles = []
        for region in regions { ibv_dereg_mr(region) }
        ibv_destroy_cq(sendQueue)
        ibv_destroy_cq(receiveQueue)
        ibv_dealloc_pd(protectionDomain)
        ibv_close_device(context)
        work.deallocate()
    }

    static func failure(_ call: String) -> VerbsError {
        let code = errno
        if code == EPERM || code == EACCES { return .permissionDenied(call: call, errno: code) }
        return .call(call, errno: code)
    }

    public func register(_ memory: UnsafeMutableRawBufferPointer) throws(VerbsError) -> UInt32 {
        let access = Int32(IBV_ACCESS_LOCAL_WRITE.rawValue)
        guard let region = carillon_ibv_reg_mr(protectionDomain, memory.baseAddress, memory.count, access) else {
            let code = errno
            // Registration pins pages: ENOMEM/EPERM here is almost always RLIMIT_MEMLOCK.
            if code == ENOMEM || code == EPERM || code == EACCES { throw .permissionDenied(call: "ibv_reg_mr (\(memory.count) bytes)", errno: code) }
            throw .call("ibv_reg_mr", errno: code)
        }
        regions.append(region)
        return region.pointee.lkey
    }

    public func addressHandle(for peer: VerbsAddress) throws(VerbsError) -> VerbsAddressHandle {
        var attributes = ibv_ah_attr()
        attributes.dlid = peer.lid
        attributes.sl = 0
        attributes.src_path_bits = 0
        attributes.port_num = UInt8(clamping: settings.port)
        // A global route header always: needed on RoCE, harmless on InfiniBand.
        attributes.is_global = 1
        withUnsafeMutableBytes(of: &attributes.grh.dgid.raw) { $0.copyBytes(from: peer.gid) }
        attributes.grh.sgid_index = UInt8(clamping: gidIndex)
        attributes.grh.hop_limit = 64
        guard let ah = ibv_create_ah(protectionDomain, &attributes) else { throw Self.failure("ibv_create_ah (\(peer))") }
        addressHandles.insert(UInt(bitPattern: ah))
        return VerbsAddressHandle(raw: UInt(bitPattern: ah))
    }

    public func release(_ handle: VerbsAddressHandle) {
        guard !closed, addressHandles.remove(handle.raw) != nil, let ah = UnsafeMutablePointer<ibv_ah>(bitPattern: handle.raw) else { return }
        ibv_destroy_ah(ah)
    }

    public func postReceive(id: UInt64, into buffer: UnsafeMutableRawBufferPointer, key: UInt32) throws(VerbsError) {
        var element = ibv_sge(addr: UInt64(UInt(bitPattern: buffer.baseAddress)), length: UInt32(buffer.count), lkey: key)
        var request = ibv_recv_wr()
        request.wr_id = id
        request.num_sge = 1
        var bad: UnsafeMutablePointer<ibv_recv_wr>?
        let result = withUnsafeMutablePointer(to: &element) { sge in
            request.sg_list = sge
            return ibv_post_recv(queuePair, &request, &bad)
        }
        guard result == 0 else { throw .call("ibv_post_recv", errno: result) }
    }

    public func postSend(
        id: UInt64, _ bytes: UnsafeRawBufferPointer, key: UInt32, to handle: VerbsAddressHandle, peer: VerbsAddress, inline: Bool
    ) throws(VerbsError) {
        var element = ibv_sge(addr: UInt64(UInt(bitPattern: bytes.baseAddress)), length: UInt32(bytes.count), lkey: key)
        var request = ibv_send_wr()
        request.wr_id = id
        request.num_sge = 1
        request.opcode = IBV_WR_SEND
        request.send_flags = IBV_SEND_SIGNALED.rawValue | (inline ? IBV_SEND_INLINE.rawValue : 0)
        request.wr.ud.ah = UnsafeMutablePointer<ibv_ah>(bitPattern: handle.raw)
        request.wr.ud.remote_qpn = peer.queuePair
        request.wr.ud.remote_qkey = peer.queueKey
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let result = withUnsafeMutablePointer(to: &element) { sge in
            request.sg_list = sge
            return ibv_post_send(queuePair, &request, &bad)
        }
        guard result == 0 else { throw .call("ibv_post_send", errno: result) }
    }

    public func poll(_ which: VerbsCompletionQueue, into completions: UnsafeMutableBufferPointer<VerbsCompletion>) throws(VerbsError) -> Int {
        guard !closed else { return 0 }
        let n = ibv_poll_cq(which == .send ? sendQueue : receiveQueue, Int32(min(completions.count, workCapacity)), work)
        guard n >= 0 else { throw .call("ibv_poll_cq", errno: -n) }
        var failedSend = false
        for i in 0..<Int(n) {
            let wc = work[i]
            completions[i] = VerbsCompletion(
                id: wc.wr_id, succeeded: wc.status == IBV_WC_SUCCESS, status: wc.status.rawValue, byteCount: Int(wc.byte_len),
                sourceQueuePair: wc.src_qp)
            if which == .send, wc.status != IBV_WC_SUCCESS { failedSend = true }
        }
        // A failed send leaves a UD queue pair in the send-queue-error state,
        // where it sends nothing more: back to ready-to-send (best effort).
        if failedSend {
            var attributes = ibv_qp_attr()
            attributes.qp_state = IBV_QPS_RTS
            attributes.cur_qp_state = IBV_QPS_SQE
            _ = ibv_modify_qp(queuePair, &attributes, Int32(IBV_QP_STATE.rawValue | IBV_QP_CUR_STATE.rawValue))
        }
        return Int(n)
    }
}
