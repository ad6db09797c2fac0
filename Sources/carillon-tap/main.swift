CarillonTap.main()
