import Testing
@testable import CarillonSimulation
