import ArgumentParser

CarillonBenchCommand.main()
