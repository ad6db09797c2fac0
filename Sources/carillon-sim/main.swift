import ArgumentParser
import CarillonSimulation

CarillonSim.main()
