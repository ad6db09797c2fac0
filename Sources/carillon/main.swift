import ArgumentParser
import Logging

// Logs go to standard error, so standard output stays the command's own.
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .info
    return handler
}
Carillon.main()
