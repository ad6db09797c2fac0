import Testing
@testable import CarillonWire
