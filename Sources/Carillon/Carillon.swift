public enum CarillonVersion { public static let string = "0.1.0" }
