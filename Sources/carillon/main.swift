import ArgumentParser

Carillon.main()
