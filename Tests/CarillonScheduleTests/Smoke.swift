import Testing
@testable import CarillonSchedule
